"""How `vss run --model` reads an export into a VSSModel (vss_cli.exports): real ONNX and TorchScript files laid out
as Ultralytics writes them, and the facts of exports one would rather not build (v5 layout, end-to-end, pose)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tests.fixtures import ultralytics_exports as exports
from vss_api.vssmodel import ModelFormat, VSSModel
from vss_cli.exports import Export, UnservableExport, model_name, names_of, read_export, to_yaml, vssmodel_for


def _facts(output: tuple[int, ...], **metadata: object) -> Export:
    return Export(Path("model.onnx"), ModelFormat.ONNX, "images", (1, 3, 640, 640), (output,), (output,), (640, 640),
                  False, metadata)


def test_an_ultralytics_detect_onnx_export_reads_as_its_names_size_stride_and_layout(tmp_path: Path) -> None:
    export = read_export(exports.detect_onnx(tmp_path / "d.onnx", dynamic=True))
    assert export.names == exports.DETECT_NAMES and export.imgsz == (640, 640) and export.batchable
    assert export.metadata["stride"] == 32 and export.metadata["task"] == "detect"
    document = vssmodel_for(export, name="d", storage_uri="s3://models/d.onnx")
    params = document["spec"]["transformer"]["detection"]
    assert params["layout"] == "yolov8" and params["rectangular"] is True and params["inputSize"] == 640
    assert "predictor" not in document["spec"], "a dynamic batch keeps the default batching"


def test_the_printed_yaml_is_a_vssmodel_with_the_storage_uri_given(tmp_path: Path) -> None:
    import yaml

    export = read_export(exports.classify_onnx(tmp_path / "c.onnx"))
    text = to_yaml(vssmodel_for(export, name="c", storage_uri="pvc://models/c.onnx"), export)
    assert text.startswith("# VSSModel built by `vss run --model` from c.onnx: an Ultralytics 8.3.0 classify")
    model = VSSModel.model_validate(yaml.safe_load(text))
    assert model.spec.served_version().storage_uri == "pvc://models/c.onnx"
    assert model.spec.classification.classes == list(exports.CLASSIFY_NAMES)
    assert model.spec.transformer.max_batch_images == 1, "a batch fixed at 1 takes one image a request"


def test_a_torchscript_export_reads_its_metadata_from_config_txt(tmp_path: Path) -> None:
    export = read_export(exports.classify_torchscript(tmp_path / "c.torchscript"))
    assert export.format is ModelFormat.TORCHSCRIPT and export.names == exports.CLASSIFY_NAMES
    assert export.ran_shapes == ((1, 4),) and export.imgsz == (224, 224)


def test_json_class_ids_sort_as_numbers_not_as_text() -> None:
    names = {str(i): f"c{i}" for i in range(12)}
    assert names_of(names)[10] == "c10" and names_of("{0: 'a', 1: 'b'}") == ()  # str stays unparsed here
    assert names_of(["x", "y"]) == ("x", "y")


def test_a_yolov5_output_is_read_from_its_shape_and_names() -> None:
    document = vssmodel_for(_facts((1, 25200, 8), task="detect", names={0: "a", 1: "b", 2: "c"}, stride=32),
                            name="v5", storage_uri="v5.onnx")
    assert document["spec"]["transformer"]["detection"]["layout"] == "yolov5"


def test_an_output_with_more_class_scores_than_names_is_refused_naming_both() -> None:
    with pytest.raises(UnservableExport, match=r"output \[1, 84, 8400\] holds 80 class scores .* names 3 classes"):
        vssmodel_for(_facts((1, 84, 8400), task="detect", names={0: "a", 1: "b", 2: "c"}), name="x",
                     storage_uri="x")


def test_a_pose_export_is_refused_by_its_task() -> None:
    with pytest.raises(UnservableExport, match=r"pose estimation export \(task 'pose', outputs \[1, 56, 8400\]\)"):
        vssmodel_for(_facts((1, 56, 8400), task="pose", names={0: "person"}), name="x", storage_uri="x")


def test_two_outputs_without_a_task_are_refused_listing_their_shapes() -> None:
    facts = replace(_facts((1, 39, 8400)), ran_shapes=((1, 39, 8400), (1, 32, 160, 160)))
    with pytest.raises(UnservableExport, match=r"has 2 outputs \(\[1, 39, 8400\], \[1, 32, 160, 160\]\)"):
        vssmodel_for(facts, name="x", storage_uri="x")


def test_metadata_that_says_classify_over_a_detection_output_is_refused() -> None:
    with pytest.raises(UnservableExport, match="says task 'classify' but its output"):
        vssmodel_for(_facts((1, 7, 8400), task="classify"), name="x", storage_uri="x")


def test_an_export_without_metadata_gets_imagenet_preprocessing_and_no_names() -> None:
    document = vssmodel_for(replace(_facts((1, 1000)), imgsz=(224, 224), input_shape=(1, 3, 224, 224)),
                            name="resnet", storage_uri="r.onnx")
    params = document["spec"]["transformer"]["classification"]
    assert "classes" not in params and "mean" not in params and params["topK"] == 5


def _plugin_graph(tmp_path: Path) -> Path:
    node = helper.make_node("EfficientNMS_TRT", ["images"], ["output0"], domain="trt.plugins", name="nms")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 100, 6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("trt.plugins", 1)])
    path = tmp_path / "trt.onnx"
    onnx.save_model(model, str(path))
    return path


def test_a_plugin_op_onnx_runtime_lacks_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(UnservableExport, match=r"op EfficientNMS_TRT \(domain trt.plugins, node 'nms'\) is a plugin"):
        read_export(_plugin_graph(tmp_path))


def test_a_half_precision_input_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("Identity", ["images"], ["output0"])
    half = [helper.make_tensor_value_info(n, TensorProto.FLOAT16, [1, 3, 64, 64]) for n in ("images", "output0")]
    graph = helper.make_graph([node], "g", half[:1], half[1:])
    path = tmp_path / "half.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(UnservableExport, match="is float16, not float32"):
        read_export(path)


def test_dynamic_height_and_width_without_imgsz_need_the_flag(tmp_path: Path) -> None:
    path = exports.detect_onnx(tmp_path / "d.onnx", dynamic=True)
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != "imgsz"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save_model(model, str(path))
    with pytest.raises(UnservableExport, match=r"no 'imgsz' in its metadata; give the size .* --imgsz N"):
        read_export(path)
    assert read_export(path, imgsz=320).imgsz == (320, 320)


def test_a_file_that_is_no_export_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.safetensors").write_bytes(b"\0")
    with pytest.raises(UnservableExport, match="vss serves ONNX"):
        read_export(tmp_path / "weights.safetensors")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(UnservableExport, match="not an ONNX model"):
        read_export(tmp_path / "broken.onnx")


def test_the_name_comes_from_the_file_as_a_dns_label() -> None:
    assert model_name(Path("YOLOv8n_best.onnx")) == "yolov8n-best"
    assert model_name(Path("___.onnx")) == "model"


def test_vss_run_takes_a_file_or_an_export_never_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vss_cli import main as cli

    assert cli.main(["run", str(tmp_path / "m.yaml"), "--model", str(tmp_path / "m.onnx")]) == 2
    assert "a VSSModel FILE or --model PATH" in capsys.readouterr().err


def test_dry_run_prints_the_vssmodel_and_serves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from vss_cli import main as cli

    export = exports.detect_onnx(tmp_path / "cells.onnx")
    assert cli.main(["run", "--model", str(export), "--dry-run", "--storage-uri", "s3://m/cells.onnx"]) == 0
    model = VSSModel.model_validate(yaml.safe_load(capsys.readouterr().out))
    assert model.metadata.name == "cells" and model.spec.served_version().storage_uri == "s3://m/cells.onnx"
