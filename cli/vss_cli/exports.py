"""`vss run --model FILE`: the VSSModel that serves a model export, read from the export itself: task, class
names, input size and stride from its metadata (Ultralytics writes `task`, `names`, `imgsz`, `stride`),
detection or classification and the YOLO layout from its output's shape, checked by running it once.

An export vss cannot serve is an `UnservableExport` that names the shape, the op or the field at fault."""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vss_api.vssmodel import API_VERSION, KIND, InvalidSpec, ModelFormat, Task, VSSModel, describe_validation_error

ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".torchscript")
# Domains whose operators ONNX Runtime implements; anything else is a plugin (TensorRT's EfficientNMS_TRT, ...).
RUNTIME_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
FORMAT_NAMES = {ModelFormat.ONNX: "an ONNX", ModelFormat.TORCHSCRIPT: "a TorchScript"}
UNSERVED_TASKS = {"segment": "segmentation", "pose": "pose estimation", "obb": "oriented boxes"}
SERVED = ("vss serves image exports with one float [N, 3, H, W] input and one output: detection as "
          "YOLOv8/v11 [N, 4+nc, anchors], YOLOv5 [N, anchors, 5+nc] or end-to-end [N, K, 6], classification "
          "as [N, nc]")


class UnservableExport(InvalidSpec):
    """A model file that no VSSModel can serve as it is."""


@dataclass(frozen=True)
class Export:
    """What a model file says about itself: declared tensors (-1 for a dynamic axis), the output shapes of one run
    at its input size, and its metadata as Python values."""

    path: Path
    format: ModelFormat
    input_name: str
    input_shape: tuple[int, ...]
    output_shapes: tuple[tuple[int, ...], ...]  # as declared (ONNX) or as run (TorchScript)
    ran_shapes: tuple[tuple[int, ...], ...]  # from one run at `imgsz`, batch 1
    imgsz: tuple[int, int]
    batchable: bool  # a run of two images gave two answers
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ultralytics(self) -> bool:
        """Written by Ultralytics' exporter, so preprocessed as Ultralytics does (others may borrow its keys)."""
        return str(self.metadata.get("author", "")).startswith("Ultralytics")

    @property
    def names(self) -> tuple[str, ...]:
        return names_of(self.metadata.get("names"))


def names_of(value: Any) -> tuple[str, ...]:
    """Class names by id from `{0: 'person', ...}` (ONNX), `{"0": "person", ...}` (TorchScript's JSON) or a list."""
    if isinstance(value, dict):
        try:
            return tuple(str(value[k]) for k in sorted(value, key=int))
        except (TypeError, ValueError) as exc:
            raise UnservableExport(f"metadata 'names' has keys that are not class ids: {exc}") from exc
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return ()


def _literal(text: str) -> Any:
    """An ONNX metadata value as Ultralytics wrote it (`str()` of a Python value); never `eval`."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _imgsz(metadata: Mapping[str, Any], declared: tuple[int, ...], flag: int | None, where: str) -> tuple[int, int]:
    if len(declared) == 4 and declared[2] > 0 and declared[3] > 0:
        return declared[2], declared[3]
    if flag is not None:
        return flag, flag
    value = metadata.get("imgsz")
    if isinstance(value, int) and value > 0:
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    raise UnservableExport(f"{where}: the input's height and width are dynamic and the export carries no 'imgsz' "
                           "in its metadata; give the size it was trained at with --imgsz N")


def read_export(path: Path, imgsz: int | None = None) -> Export:
    """The facts of the ONNX or TorchScript file `path`, read and checked by running it once on CPU."""
    if not path.is_file():
        raise UnservableExport(f"{path}: no such file")
    if path.suffix in ONNX_SUFFIXES:
        return read_onnx(path, imgsz)
    if path.suffix in TORCHSCRIPT_SUFFIXES:
        return read_torchscript(path, imgsz)
    raise UnservableExport(f"{path}: vss serves ONNX (.onnx) and TorchScript ({', '.join(TORCHSCRIPT_SUFFIXES)}) "
                           "exports")


def _check_image_input(shape: tuple[int, ...], where: str) -> None:
    if len(shape) != 4:
        raise UnservableExport(f"{where} has shape {list(shape)} (rank {len(shape)}); {SERVED}")
    if shape[1] != 3:
        hint = " (NHWC? vss feeds NCHW)" if shape[3] == 3 else ""
        raise UnservableExport(f"{where} has shape {list(shape)}: {shape[1]} channels where vss sends 3 (RGB)"
                               f"{hint}; {SERVED}")


def read_onnx(path: Path, imgsz_flag: int | None = None) -> Export:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not a model
        raise UnservableExport(f"{path}: not an ONNX model: {exc}") from exc
    metadata = {p.key: _literal(p.value) for p in model.metadata_props}
    for node in model.graph.node:
        if node.domain not in RUNTIME_DOMAINS:
            raise UnservableExport(f"{path.name}: op {node.op_type} (domain {node.domain}, node {node.name!r}) is "
                                   "a plugin ONNX Runtime does not implement; export without it (for YOLO: "
                                   "without nms, or with nms=False)")
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            raise UnservableExport(f"{path.name}: op {node.op_type} (node {node.name!r}) is not an ONNX operator")
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    shapes = {i.name: _dims(i) for i in [*inputs, *model.graph.output]}
    if len(inputs) != 1:
        listed = ", ".join(f"{i.name} {list(shapes[i.name])}" for i in inputs)
        raise UnservableExport(f"{path.name} has {len(inputs)} inputs ({listed}); {SERVED}")
    (image,) = inputs
    where = f"{path.name}: input {image.name!r}"
    _check_image_input(shapes[image.name], where)
    elem = image.type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise UnservableExport(f"{where} is {onnx.TensorProto.DataType.Name(elem).lower()}, not float32 "
                               "(a half-precision export? export with half=False)")
    outputs = tuple(shapes[o.name] for o in model.graph.output)
    del model
    h, w = _imgsz(metadata, shapes[image.name], imgsz_flag, where)
    batch = shapes[image.name][0]
    ran = _run_onnx(path, image.name, (1 if batch == -1 else batch, 3, h, w))
    batchable = batch == -1 and _batch_of(_run_onnx(path, image.name, (2, 3, h, w), quiet=True)) == 2
    return Export(path, ModelFormat.ONNX, image.name, shapes[image.name], outputs, ran, (h, w), batchable, metadata)


def _dims(value_info: Any) -> tuple[int, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim)


def _batch_of(shapes: tuple[tuple[int, ...], ...] | None) -> int | None:
    return shapes[0][0] if shapes and shapes[0] else None


def _run_onnx(path: Path, name: str, shape: tuple[int, ...], quiet: bool = False
              ) -> tuple[tuple[int, ...], ...]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        outputs = session.run(None, {name: np.zeros(shape, np.float32)})
    except Exception as exc:  # ONNX Runtime raises its own untyped errors; quiet: a probe
        if quiet:
            return ()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnservableExport(f"{path.name}: ONNX Runtime cannot run it on a {list(shape)} input: {first}") from exc
    return tuple(tuple(int(d) for d in np.shape(o)) for o in outputs)


def read_torchscript(path: Path, imgsz_flag: int | None = None) -> Export:
    import torch

    extra: dict[str, Any] = {"config.txt": "", "names": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch marks torch.jit deprecated
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)  # type: ignore[no-untyped-call]
    except Exception as exc:  # torch reports unknown ops and bad archives as RuntimeError and others
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnservableExport(f"{path.name}: torch.jit.load cannot load it as TorchScript: {first}") from exc
    module.eval()
    metadata: dict[str, Any] = {}
    if extra["config.txt"]:  # Ultralytics: the exporter's metadata as JSON
        try:
            loaded = json.loads(extra["config.txt"])
        except json.JSONDecodeError as exc:
            raise UnservableExport(f"{path.name}: its config.txt is not JSON: {exc}") from exc
        metadata = dict(loaded) if isinstance(loaded, dict) else {}
    elif extra["names"]:  # the project's own TorchScript: a JSON list of class names
        metadata = {"names": json.loads(extra["names"])}
    where = f"{path.name}: input"
    h, w = _imgsz(metadata, (), imgsz_flag, where)

    def run(batch: int) -> tuple[tuple[int, ...], ...]:
        with torch.inference_mode():
            out = module(torch.zeros(batch, 3, h, w))
        parts = out if isinstance(out, (tuple, list)) else (out,)
        return tuple(tuple(int(d) for d in p.shape) if isinstance(p, torch.Tensor) else () for p in parts)

    try:
        ran = run(1)
    except Exception as exc:  # a TorchScript graph raises RuntimeError for any op it cannot run
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnservableExport(f"{path.name}: it cannot run on a [1, 3, {h}, {w}] input: {first}") from exc
    try:
        batchable = _batch_of(run(2)) == 2
    except Exception:  # traced with a fixed batch: served one image at a time
        batchable = False
    return Export(path, ModelFormat.TORCHSCRIPT, "images", (-1, 3, h, w), ran, ran, (h, w), batchable, metadata)


# --- the VSSModel -----------------------------------------------------------------------------------------

def model_name(path: Path) -> str:
    """A DNS label from the file's name: `YOLOv8n.onnx` -> `yolov8n`."""
    label = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-")[:40].strip("-")
    return label or "model"


def _task(export: Export) -> Task:
    claimed = str(export.metadata.get("task", "")) or None
    outputs = ", ".join(f"{list(s)}" for s in export.ran_shapes)
    if claimed in UNSERVED_TASKS:
        raise UnservableExport(f"{export.path.name} is a {UNSERVED_TASKS[claimed]} export (task {claimed!r}, "
                               f"outputs {outputs}); {SERVED}")
    if len(export.ran_shapes) != 1:
        raise UnservableExport(f"{export.path.name} has {len(export.ran_shapes)} outputs ({outputs}); {SERVED}")
    shape = export.ran_shapes[0]
    by_shape = {2: Task.CLASSIFICATION, 3: Task.DETECTION}.get(len(shape))
    if by_shape is None:
        raise UnservableExport(f"{export.path.name}: output {list(shape)} is neither [N, nc] nor [N, ., .]; {SERVED}")
    expected = {"detect": Task.DETECTION, "classify": Task.CLASSIFICATION}.get(claimed or "")
    if claimed is not None and expected is None:
        raise UnservableExport(f"{export.path.name}: metadata task {claimed!r} is none of detect, classify; {SERVED}")
    if expected is not None and expected is not by_shape:
        raise UnservableExport(f"{export.path.name}: its metadata says task {claimed!r} but its output {list(shape)} "
                               f"is shaped for {by_shape.value}")
    return by_shape


def _detection(export: Export) -> dict[str, Any]:
    from vss_transformers.detection import detect_layout

    shape = export.ran_shapes[0]
    names = export.names
    flags = {k: str(v) for k, v in export.metadata.items()}
    layout = detect_layout(shape, flags, len(names))
    _, rows, cols = shape
    nc = {"yolov8": rows - 4, "yolov5": cols - 5}.get(layout)
    if layout == "end2end" and cols != 6:
        raise UnservableExport(f"{export.path.name}: end-to-end output {list(shape)} is not [N, K, 6]; {SERVED}")
    if nc is not None and nc < 1:
        raise UnservableExport(f"{export.path.name}: output {list(shape)} holds no class scores; {SERVED}")
    if nc is not None and names and nc != len(names):
        raise UnservableExport(f"{export.path.name}: output {list(shape)} holds {nc} class scores ({layout} layout) "
                               f"but its metadata names {len(names)} classes")
    stride = export.metadata.get("stride", 32)
    if not isinstance(stride, int) or stride <= 0 or 32 % stride:
        raise UnservableExport(f"{export.path.name}: metadata stride {stride!r}: vss letterboxes to multiples of "
                               "32, which needs a stride dividing 32")
    size = max(export.imgsz)
    if size % 32 or not 32 <= size <= 4096:
        raise UnservableExport(f"{export.path.name}: input size {list(export.imgsz)}: a detector's inputSize is a "
                               "multiple of 32 from 32 to 4096")
    params: dict[str, Any] = {"inputSize": size, "layout": layout,
                              # Ultralytics' own `predict` defaults, so answers match what `yolo predict` shows.
                              "confidenceThreshold": 0.25, "iouThreshold": 0.7,
                              # A frame letterboxed to a stride-multiple rectangle only where H and W are dynamic;
                              # TorchScript is traced at one size.
                              "rectangular": export.format is ModelFormat.ONNX and export.input_shape[2] == -1}
    if names:
        params["classes"] = list(names)
    return params


def _classification(export: Export) -> dict[str, Any]:
    h, w = export.imgsz
    if h != w:
        raise UnservableExport(f"{export.path.name}: input {list(export.input_shape)} is not square; a classifier's "
                               "input is inputSize x inputSize")
    nc = export.ran_shapes[0][1]
    names = export.names
    if names and nc != len(names):
        raise UnservableExport(f"{export.path.name}: output {list(export.ran_shapes[0])} holds {nc} class scores but "
                               f"its metadata names {len(names)} classes")
    params: dict[str, Any] = {"inputSize": h, "topK": min(5, nc)}
    if export.ultralytics:
        # Ultralytics' classify_transforms: shorter side to imgsz, centre crop (crop fraction 1), pixels / 255.
        params.update(resizeSize=h, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    if names:
        params["classes"] = list(names)
    return params


def vssmodel_for(export: Export, *, name: str, storage_uri: str) -> dict[str, Any]:
    """The VSSModel document (camelCase, as applied) that serves `export`, checked against the schema."""
    task = _task(export)
    params = _detection(export) if task is Task.DETECTION else _classification(export)
    spec: dict[str, Any] = {
        "task": task.value, "version": "v1",
        "versions": [{"name": "v1", "storageUri": storage_uri, "format": export.format.value}]}
    transformer: dict[str, Any] = {task.value: params}
    if not export.batchable:
        spec["predictor"] = {"batching": {"maxBatchSize": 1}}
        transformer["maxBatchImages"] = 1  # a fixed batch of one: a request of more is a 400, not a runtime error
    spec["transformer"] = transformer
    document = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}
    from pydantic import ValidationError

    try:
        VSSModel.model_validate(document)
    except ValidationError as exc:
        raise UnservableExport(f"{export.path.name}: {describe_validation_error(exc)}") from exc
    return document


def describe(export: Export) -> str:
    """One line on what the export is, for the YAML's header."""
    version = f" {export.metadata['version']}" if export.metadata.get("version") else ""
    origin = (f"an Ultralytics{version} {export.metadata.get('task')} export" if export.ultralytics
              else f"{FORMAT_NAMES[export.format]} {export.metadata['task']} export" if export.metadata.get("task")
              else f"{FORMAT_NAMES[export.format]} export")
    outputs = ", ".join(str(list(s)) for s in export.ran_shapes)
    return f"{export.path.name}: {origin}, input {export.input_name} {list(export.input_shape)}, output {outputs}"


def to_yaml(document: Mapping[str, Any], export: Export) -> str:
    header = (f"# VSSModel built by `vss run --model` from {describe(export)}.\n"
              "# In a cluster: set storageUri to where the cluster reads the file (s3://, gs://, pvc://), then\n"
              "# kubectl apply -f this file.\n")
    return header + yaml.safe_dump(dict(document), sort_keys=False, width=110, default_flow_style=None)


def run_export(path: Path, *, name: str | None, storage_uri: str | None, imgsz: int | None, http_port: int,
               grpc_port: int, dry_run: bool) -> int:
    """`vss run --model PATH`: print the VSSModel built from the export, then serve it (unless `dry_run`)."""
    from vss_cli.run import serve

    export = read_export(path, imgsz)
    document = vssmodel_for(export, name=name or model_name(path), storage_uri=storage_uri or str(path.resolve()))
    print(to_yaml(document, export), end="", flush=True)
    if dry_run:
        return 0
    print("---", flush=True)  # the YAML ends here; what follows is vss run's own report
    return serve(VSSModel.model_validate(document), path.resolve(), http_port, grpc_port)
