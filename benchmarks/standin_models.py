"""Stand-in models with the compute and tensor layouts of the real ones, for benchmarks that must run
before (or without) trained weights: a YOLOv8n-shaped detector and a ResNet-18-shaped classifier, written
as ONNX graphs node by node from seeded random weights (numpy and onnx only: no torch, no download).

The detector is YOLOv8n layer for layer (Conv/C2f/SPPF backbone, PAN neck, decoupled head with DFL, BN
folded into the convolutions as an export does), so ONNX Runtime spends what it spends on a real
`yolov8n.onnx` export (8.7 GFLOPs at 640x640). Like `export(dynamic=True)` it has dynamic batch,
height and width, computes its anchors in the graph, outputs `output0` [B, 84, anchors] and carries
Ultralytics metadata (names, stride, imgsz). Random weights detect nothing, so the class bias is
calibrated on a frame to let a realistic number of candidates (about 100) pass confidence 0.5: NMS then
does the work it does on a busy street scene."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
REG_MAX = 16
STRIDES = (8, 16, 32)


@dataclass
class GraphBuilder:
    """Appends nodes and seeded random initialisers; every helper returns its output tensor's name."""

    seed: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    _count: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, value: npt.ArrayLike, dtype: type = np.float32, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> str:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else ",".join(outs)

    def conv(self, x: str, c_in: int, c_out: int, k: int = 1, s: int = 1, act: str = "silu",
             bias: npt.NDArray[np.float32] | None = None) -> str:
        """Conv2d with BatchNorm folded in (weights and bias), then the activation."""
        std = np.sqrt(1.0 / (c_in * k * k))
        w = self.const(self.rng.normal(0.0, std, (c_out, c_in, k, k)), prefix="w")
        b = self.const(bias if bias is not None else self.rng.normal(0.0, 0.05, c_out), prefix="b")
        y = self.op("Conv", [x, w, b], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
        if act == "silu":  # what torch exports for nn.SiLU
            return self.op("Mul", [y, self.op("Sigmoid", [y])])
        if act == "relu":
            return self.op("Relu", [y])
        return y

    def split(self, x: str, sizes: Sequence[int], axis: int = 1) -> list[str]:
        out = self.op("Split", [x, self.const(list(sizes), np.int64)], n_out=len(sizes), axis=axis)
        return out.split(",")


# ------------------------------------------------------------------------------------------ YOLOv8n


def _c2f(g: GraphBuilder, x: str, c_in: int, c_out: int, n: int, shortcut: bool) -> str:
    c = c_out // 2
    y = g.split(g.conv(x, c_in, 2 * c, 1), [c, c])
    for _ in range(n):
        h = g.conv(g.conv(y[-1], c, c, 3), c, c, 3)
        y.append(g.op("Add", [y[-1], h]) if shortcut else h)
    return g.conv(g.op("Concat", y, axis=1), (2 + n) * c, c_out, 1)


def _sppf(g: GraphBuilder, x: str, c_in: int, c_out: int) -> str:
    c = c_in // 2
    y = [g.conv(x, c_in, c, 1)]
    for _ in range(3):
        y.append(g.op("MaxPool", [y[-1]], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
    return g.conv(g.op("Concat", y, axis=1), 4 * c, c_out, 1)


def _upsample(g: GraphBuilder, x: str) -> str:
    scales = g.const([1.0, 1.0, 2.0, 2.0])
    return g.op("Resize", [x, "", scales], mode="nearest")


def _anchors(g: GraphBuilder, feature: str, stride: int) -> tuple[str, str]:
    """Anchor centres [2, h*w] (x then y, in grid units) and the stride row [1, h*w] of one level."""
    shape = g.op("Shape", [feature])
    h = g.op("Cast", [g.op("Gather", [shape, g.const(2, np.int64)], axis=0)], to=TensorProto.FLOAT)
    w = g.op("Cast", [g.op("Gather", [shape, g.const(3, np.int64)], axis=0)], to=TensorProto.FLOAT)
    half, zero, one = g.const(0.5), g.const(0.0), g.const(1.0)
    ys = g.op("Add", [g.op("Range", [zero, h, one]), half])  # [h]
    xs = g.op("Add", [g.op("Range", [zero, w, one]), half])  # [w]
    ycol = g.op("Unsqueeze", [ys, g.const([1], np.int64)])  # [h, 1]
    xrow = g.op("Unsqueeze", [xs, g.const([0], np.int64)])  # [1, w]
    gx = g.op("Add", [xrow, g.op("Mul", [ycol, zero])])  # [h, w]
    gy = g.op("Add", [ycol, g.op("Mul", [xrow, zero])])
    flat = g.const([1, -1], np.int64)
    gx, gy = g.op("Reshape", [gx, flat]), g.op("Reshape", [gy, flat])
    points = g.op("Concat", [gx, gy], axis=0)  # [2, h*w]
    strides = g.op("Add", [g.op("Mul", [gx, zero]), g.const(float(stride))])  # [1, h*w]
    return points, strides


def yolov8n_graph(num_classes: int = 80, seed: int = 0, class_bias: float = -10.0) -> onnx.ModelProto:
    """YOLOv8n (width 0.25, depth 0.33) with the Ultralytics export's output: `output0` [B, 4+nc, A],
    rows cx, cy, w, h in input pixels then sigmoid class scores."""
    g = GraphBuilder(seed)
    x = "images"
    p1 = g.conv(x, 3, 16, 3, 2)
    p2 = _c2f(g, g.conv(p1, 16, 32, 3, 2), 32, 32, 1, True)
    p3 = _c2f(g, g.conv(p2, 32, 64, 3, 2), 64, 64, 2, True)
    p4 = _c2f(g, g.conv(p3, 64, 128, 3, 2), 128, 128, 2, True)
    p5 = _sppf(g, _c2f(g, g.conv(p4, 128, 256, 3, 2), 256, 256, 1, True), 256, 256)
    h12 = _c2f(g, g.op("Concat", [_upsample(g, p5), p4], axis=1), 384, 128, 1, False)
    out3 = _c2f(g, g.op("Concat", [_upsample(g, h12), p3], axis=1), 192, 64, 1, False)
    out4 = _c2f(g, g.op("Concat", [g.conv(out3, 64, 64, 3, 2), h12], axis=1), 192, 128, 1, False)
    out5 = _c2f(g, g.op("Concat", [g.conv(out4, 128, 128, 3, 2), p5], axis=1), 384, 256, 1, False)

    c2, c3 = max(16, 64 // 4, REG_MAX * 4), max(64, min(num_classes, 100))
    boxes, scores, points, strides = [], [], [], []
    for feature, channels, stride in zip((out3, out4, out5), (64, 128, 256), STRIDES, strict=True):
        box = g.conv(g.conv(g.conv(feature, channels, c2, 3), c2, c2, 3), c2, 4 * REG_MAX, 1, act="none")
        cls = g.conv(g.conv(g.conv(feature, channels, c3, 3), c3, c3, 3), c3, num_classes, 1, act="none",
                     bias=np.full(num_classes, class_bias, np.float32))
        flat = g.const([0, 0, -1], np.int64)
        boxes.append(g.op("Reshape", [box, flat]))
        scores.append(g.op("Reshape", [cls, flat]))
        pts, strd = _anchors(g, feature, stride)
        points.append(pts)
        strides.append(strd)
    box = g.op("Concat", boxes, axis=2)  # [B, 64, A]
    cls = g.op("Concat", scores, axis=2)  # [B, nc, A]
    anchor_points = g.op("Concat", points, axis=1)  # [2, A]
    stride_row = g.op("Concat", strides, axis=1)  # [1, A]
    # DFL: a softmax over 16 bins per side, then its expectation
    bins = g.op("Reshape", [box, g.const([0, 4, REG_MAX, -1], np.int64)])
    probs = g.op("Softmax", [bins], axis=2)
    weights = g.const(np.arange(REG_MAX, dtype=np.float32).reshape(1, 1, REG_MAX, 1))
    dist = g.op("ReduceSum", [g.op("Mul", [probs, weights]), g.const([2], np.int64)], keepdims=0)
    lt, rb = g.split(dist, [2, 2])
    x1y1 = g.op("Sub", [anchor_points, lt])
    x2y2 = g.op("Add", [anchor_points, rb])
    cxy = g.op("Div", [g.op("Add", [x1y1, x2y2]), g.const(2.0)])
    wh = g.op("Sub", [x2y2, x1y1])
    dbox = g.op("Mul", [g.op("Concat", [cxy, wh], axis=1), stride_row])
    g.nodes.append(helper.make_node("Concat", [dbox, g.op("Sigmoid", [cls])], ["output0"], axis=1))

    graph = helper.make_graph(
        g.nodes, "yolov8n_standin",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + num_classes, "anchors"])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="vss-benchmarks")
    model.ir_version = 8
    names = COCO_NAMES[:num_classes] if num_classes <= len(COCO_NAMES) else tuple(
        f"class_{i}" for i in range(num_classes))
    _metadata(model, {"names": str(dict(enumerate(names))), "stride": "32", "imgsz": "[640, 640]",
                      "task": "detect", "batch": "1", "description": "YOLOv8n-shaped stand-in, random weights"})
    return model


def calibrated_yolov8n(frame_nchw: npt.NDArray[np.float32], candidates: int = 100, num_classes: int = 80,
                       seed: int = 0) -> onnx.ModelProto:
    """The stand-in with its class bias set so that about `candidates` anchors of `frame_nchw` score
    above 0.5, as a busy scene does with a trained model."""
    import onnxruntime as ort

    probe = yolov8n_graph(num_classes, seed, class_bias=0.0)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": frame_nchw})
    scores = np.clip(out[0, 4:].max(axis=0), 1e-7, 1 - 1e-7)
    logits = np.sort(np.log(scores / (1 - scores)))[::-1]
    k = min(candidates, logits.size - 1)
    threshold = float((logits[k - 1] + logits[k]) / 2)
    return yolov8n_graph(num_classes, seed, class_bias=-threshold)


# ------------------------------------------------------------------------------------------ ResNet-18


def resnet18_graph(num_classes: int = 1000, seed: int = 1, size: int = 224) -> onnx.ModelProto:
    """ResNet-18 (BN folded): `images` float [B, 3, size, size] ImageNet-normalised → `output0` logits."""
    g = GraphBuilder(seed)
    x = g.conv("images", 3, 64, 7, 2, act="relu")
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            h = g.conv(g.conv(x, c_in, c_out, 3, s, act="relu"), c_out, c_out, 3, 1, act="none")
            skip = x if (s == 1 and c_in == c_out) else g.conv(x, c_in, c_out, 1, s, act="none")
            x = g.op("Relu", [g.op("Add", [h, skip])])
            c_in = c_out
    feat = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    w = g.const(g.rng.normal(0.0, np.sqrt(1.0 / 512), (num_classes, 512)))
    b = g.const(np.zeros(num_classes))
    g.nodes.append(helper.make_node("Gemm", [feat, w, b], ["output0"], transB=1))
    graph = helper.make_graph(
        g.nodes, "resnet18_standin",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", num_classes])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="vss-benchmarks")
    model.ir_version = 8
    _metadata(model, {"names": str({i: f"class_{i}" for i in range(num_classes)}), "imgsz": f"[{size}, {size}]",
                      "task": "classify", "description": "ResNet-18-shaped stand-in, random weights"})
    return model


def _metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
