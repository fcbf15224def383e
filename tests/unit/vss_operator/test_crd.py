"""The generated VSSModel CRD: in sync with the pydantic models, structural, and readable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from vss_api.vssmodel import RolloutSpec
from vss_operator import crd


def _schema() -> dict[str, Any]:
    version = crd.crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.get("properties", {}).items():
            yield from _nodes(value, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            yield from _nodes(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_matches_the_models() -> None:
    committed = crd.default_path().read_text()
    assert committed == crd.crd_yaml(), "crds/ drifted from the models: run `python -m vss_operator.crd`"


def test_chart_copy_of_the_crd_matches_the_models() -> None:
    assert crd.chart_path().read_text() == crd.crd_yaml(), "run `python -m vss_operator.crd`"


def test_crd_file_parses_as_the_same_object_it_was_generated_from() -> None:
    assert yaml.safe_load(crd.crd_yaml()) == crd.crd()


def test_schema_is_structural_every_node_typed_and_no_unions_or_refs() -> None:
    for path, node in _nodes(_schema()):
        assert "type" in node, f"{path or '<root>'} has no type"
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "title", "x-kubernetes-preserve-unknown-fields"):
            assert forbidden not in node, f"{path}: {forbidden}"
        if "properties" in node:
            assert "additionalProperties" not in node, f"{path}: properties with additionalProperties"


def test_spec_carries_enums_defaults_patterns_and_bounds_from_the_models() -> None:
    spec = _schema()["properties"]["spec"]
    props = spec["properties"]
    assert props["task"]["enum"] == ["detection", "classification", "anomaly", "forecasting"]
    assert set(spec["required"]) == {"task", "version", "versions"}
    version = props["versions"]["items"]["properties"]
    assert version["name"]["pattern"] == "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    assert {k: v for k, v in version["format"].items() if k != "description"} == {
        "type": "string", "enum": ["onnx", "torchscript"], "default": "onnx"}
    predictor = props["predictor"]["properties"]
    assert predictor["device"]["default"] == "cpu"
    assert predictor["batching"]["properties"]["maxBatchSize"] == {
        "description": "Largest merged batch.", "type": "integer", "default": 8, "minimum": 1, "maximum": 256}
    detection = props["transformer"]["properties"]["detection"]["properties"]
    assert detection["inputSize"]["multipleOf"] == 32
    analysis = props["rollout"]["properties"]["analysis"]["properties"]
    assert analysis["maxP95LatencyMs"]["exclusiveMinimum"] is True
    assert analysis["maxP95LatencyMs"]["minimum"] == 0


def test_default_factories_become_schema_defaults_so_the_apiserver_fills_the_same_values() -> None:
    rollout = _schema()["properties"]["spec"]["properties"]["rollout"]
    expected = RolloutSpec().model_dump(mode="json", by_alias=True, exclude_none=True)
    assert rollout["default"] == expected
    assert rollout["properties"]["steps"]["default"] == expected["steps"]
    labels = rollout["properties"]["analysis"]["properties"]["prometheus"]["properties"]["labels"]
    assert "default" not in labels  # an empty map has nothing to fill


def test_optional_fields_are_plain_types_without_null_defaults() -> None:
    threads = _schema()["properties"]["spec"]["properties"]["predictor"]["properties"]["threads"]
    assert threads == {"description": threads["description"], "type": "integer", "minimum": 1, "maximum": 256}


def test_cel_rules_cover_version_transformer_block_steps_and_unique_versions() -> None:
    spec = _schema()["properties"]["spec"]
    messages = [r["message"] for r in spec["x-kubernetes-validations"]]
    assert "spec.version must name an entry of spec.versions" in messages
    assert any("spec.transformer.detection is set" in m for m in messages)
    assert any("spec.transformer.classification is set" in m for m in messages)
    steps = spec["properties"]["rollout"]["properties"]["steps"]
    assert steps["x-kubernetes-validations"][0]["message"] == (
        "rollout.steps weights must rise strictly from step to step")
    assert steps["items"]["properties"]["weight"]["maximum"] == 99
    versions = spec["properties"]["versions"]
    assert versions["x-kubernetes-validations"][0]["message"] == "spec.versions names must be unique"
    assert versions["x-kubernetes-list-type"] == "map"


def test_status_has_observed_generation_phase_and_conditions_as_a_list_map_keyed_by_type() -> None:
    status = _schema()["properties"]["status"]
    props = status["properties"]
    assert props["observedGeneration"]["type"] == "integer"
    conditions = props["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["properties"]) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
    assert conditions["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert props["phase"]["enum"] == ["Stable", "Progressing", "Promoted", "RolledBack", "Failed"]
    assert {"stableVersion", "canaryVersion", "canaryWeight", "url", "history", "rollout"} <= set(props)
    assert all("default" not in node for _, node in _nodes(status))


def test_status_holds_the_rollout_block_a_restarted_operator_resumes_from() -> None:
    rollout = _schema()["properties"]["status"]["properties"]["rollout"]["properties"]
    assert {"stage", "step", "startedAt", "stageStartedAt", "lastAnalysisAt", "failedChecks", "noDataChecks",
            "passedChecks", "lastCheck", "reason", "message", "mirrorPercent", "lastRetry"} == set(rollout)
    assert rollout["stage"]["enum"] == ["Initializing", "Shadow", "Canary", "AwaitingPromotion"]
    assert rollout["lastCheck"]["properties"]["verdict"]["enum"] == ["Pass", "Fail", "NoData", "Error"]


def test_resource_is_namespaced_with_short_name_and_status_subresource() -> None:
    spec = crd.crd()["spec"]
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["vssm"]
    assert spec["versions"][0]["subresources"] == {"status": {}}
    assert crd.crd()["metadata"]["name"] == "vssmodels.serving.vss.ai"


def test_printer_columns_show_version_canary_weight_ready_age_and_wide_extras() -> None:
    columns = crd.crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    wide = [c["name"] for c in columns if c.get("priority")]
    assert default == ["Version", "Canary", "Weight", "Phase", "Ready", "Age"]
    assert {"Task", "Stable", "URL"} <= set(wide)
    ready = next(c for c in columns if c["name"] == "Ready")
    assert ready["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'


def test_every_field_of_both_crds_at_every_depth_has_a_description_for_kubectl_explain() -> None:
    deepest = {"VSSModel": "spec.rollout.analysis.prometheus.timeout", "VSSStream": "spec.analytics.zones.polygon"}
    for definition in (crd.crd(), crd.stream_crd()):
        kind = definition["spec"]["names"]["kind"]
        paths = crd.fields(definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        assert deepest[kind] in dict(paths), f"{kind}: the walk missed {deepest[kind]}"
        # metadata is ObjectMeta's: the apiserver refuses a description there and explains it itself.
        undescribed = [path for path, node in paths if path != "metadata" and not node.get("description", "").strip()]
        assert undescribed == [], (
            f"{kind}: fields without a description (kubectl explain shows nothing): {undescribed}; "
            "give them Field(description=...) or, for a nested model, a class docstring")


def test_fields_walks_lists_and_nested_objects_as_kubectl_explain_names_them() -> None:
    schema = {"type": "object", "properties": {
        "a": {"type": "array", "items": {"type": "object", "properties": {"b": {"type": "string"}}}},
        "c": {"type": "object", "additionalProperties": {"type": "string"}}}}

    assert [path for path, _ in crd.fields(schema)] == ["a", "a.b", "c"]


def test_main_writes_the_crd_to_the_given_path(tmp_path: Any) -> None:
    target = tmp_path / "out" / "crd.yaml"
    assert crd.main([str(target)]) == 0
    assert target.read_text() == crd.crd_yaml()


def test_committed_stream_crd_and_its_chart_copy_match_the_models() -> None:
    for path in (crd.default_path(crd.STREAM_CRD_FILE), crd.chart_path(crd.STREAM_CRD_FILE)):
        assert path.read_text() == crd.stream_crd_yaml(), "run `python -m vss_operator.crd`"


def test_the_stream_crd_is_structural_and_prints_source_model_fps_lag_and_ready() -> None:
    version = crd.stream_crd()["spec"]["versions"][0]
    for path, node in _nodes(version["schema"]["openAPIV3Schema"]):
        assert "type" in node, f"{path or '<root>'} has no type"
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title"} & set(node), path
    assert [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c] == [
        "Source", "Model", "FPS", "Lag", "Ready", "Age"]


def test_strings_yaml_1_1_reads_as_booleans_are_quoted_so_kubectl_keeps_them_strings() -> None:
    text = crd._dump({"required": ["x", "y"], "n": "on"})

    assert text == "required:\n- x\n- 'y'\n'n': 'on'\n"
