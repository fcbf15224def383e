"""The anomaly task: verdicts from the detector graph's outputs and the calibration in its metadata,
the model's feature order hidden from clients, and a model that does not fit refused at start-up."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from vss_api.vssmodel import AnomalyParams
from vss_transformers.anomaly import AnomalyTask, Calibration, as_v1_result, as_v2_tensors, judge, severity_of

FEATURES = ["temperature", "humidity", "pressure", "vibration", "power"]
CALIBRATION = Calibration(threshold=0.6, severity_edges=(1.0, 2.0, 3.0), affected_margin=1.5)


def config(*, features: list[str] = FEATURES, window: int = 100, **meta: str) -> dict[str, Any]:
    metadata = {"vss.features": json.dumps(features), "vss.threshold": "0.6",
                "vss.severity_edges": "[1.0, 2.0, 3.0]", "vss.affected_margin": "1.5", **meta}
    return {"inputs": [{"name": "series", "datatype": "FP32", "shape": [-1, window, len(features)]}],
            "outputs": [{"name": n, "datatype": "FP32", "shape": s} for n, s in
                        (("anomaly_score", [-1]), ("evidence", [-1]), ("feature_evidence", [-1, 5]),
                         ("forest_score", [-1]))],
            "parameters": {"metadata": metadata}}


def graph_outputs(scores: list[float], per_feature: list[list[float]]) -> dict[str, np.ndarray]:
    evidence = np.array(per_feature, np.float32)
    return {"anomaly_score": np.array(scores, np.float32), "evidence": evidence.max(axis=1),
            "feature_evidence": evidence, "forest_score": np.zeros(len(scores), np.float32)}


def test_a_window_scored_over_the_threshold_is_an_anomaly_graded_by_the_severity_bands() -> None:
    [verdict] = judge(np.array([0.9], np.float32), np.array([2.5], np.float32),
                      np.array([[2.5, 0.1, -1, -2, -3]], np.float32), FEATURES, CALIBRATION)

    assert verdict.is_anomaly and verdict.severity == "high"
    assert verdict.confidence == pytest.approx(0.9)
    assert verdict.affected_features == ("temperature",)


def test_a_window_under_the_threshold_is_normal_with_no_severity_and_the_complement_as_confidence() -> None:
    [verdict] = judge(np.array([0.2], np.float32), np.array([0.5], np.float32),
                      np.array([[0.5, 0, 0, 0, 0]], np.float32), FEATURES, CALIBRATION)

    assert not verdict.is_anomaly
    assert verdict.severity == "none" and verdict.affected_features == ()
    assert verdict.confidence == pytest.approx(0.8)


@pytest.mark.parametrize(("evidence", "severity"), [(0.5, "low"), (1.0, "medium"), (1.99, "medium"),
                                                    (2.0, "high"), (3.0, "critical"), (9.0, "critical")])
def test_severity_bands_are_closed_below(evidence: float, severity: str) -> None:
    assert severity_of(evidence, (1.0, 2.0, 3.0)) == severity


def test_affected_features_are_those_beyond_normal_and_near_the_strongest_strongest_first() -> None:
    # humidity 3.0, power 2.0 (within 1.5), pressure 1.0 (too far below), vibration < 0 (normal)
    [verdict] = judge(np.array([0.99], np.float32), np.array([3.0], np.float32),
                      np.array([[-0.5, 3.0, 1.0, -0.2, 2.0]], np.float32), FEATURES, CALIBRATION)

    assert verdict.affected_features == ("humidity", "power")


def test_an_anomaly_no_single_feature_explains_still_names_the_strongest_feature() -> None:
    [verdict] = judge(np.array([0.7], np.float32), np.array([-0.1], np.float32),
                      np.array([[-0.3, -0.2, -0.1, -0.9, -0.4]], np.float32), FEATURES, CALIBRATION)

    assert verdict.affected_features == ("pressure",)


def test_the_task_reads_its_calibration_from_the_model_metadata() -> None:
    task = AnomalyTask(AnomalyParams())
    task.configure(config())

    [verdict] = task.postprocess(graph_outputs([0.65], [[0, 0, 0, 0, 1.5]]), None)

    assert verdict.is_anomaly and verdict.severity == "medium"
    assert verdict.affected_features == ("power",)


def test_a_threshold_in_the_vssmodel_overrides_the_calibrated_one() -> None:
    task = AnomalyTask(AnomalyParams(threshold=0.7))
    task.configure(config())

    [verdict] = task.postprocess(graph_outputs([0.65], [[0, 0, 0, 0, 1.5]]), None)

    assert not verdict.is_anomaly


def test_a_vssmodel_feature_order_other_than_the_models_is_mapped_both_ways() -> None:
    client = ["power", "vibration", "pressure", "humidity", "temperature"]
    task = AnomalyTask(AnomalyParams(features=client))
    task.configure(config())
    rows = np.tile(np.arange(5, dtype=np.float32), (100, 1)).tolist()  # client column i holds i

    feeds, _ = task.prepare(task.parse_v1({"instances": [rows]}))
    [verdict] = task.postprocess(graph_outputs([0.9], [[2.0, 0, 0, 0, 0]]), None)

    np.testing.assert_array_equal(feeds["series"][0, 0], [4, 3, 2, 1, 0])  # model order
    assert verdict.affected_features == ("temperature",)
    np.testing.assert_array_equal(verdict.feature_scores, [0, 0, 0, 0, 2.0])  # client order


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window": 50}, "the model reads 50 steps"),
    ({"features": ["a", "b", "c", "d", "e"]}, "the model reads features"),
    ({"vss.threshold": "not a number"}, "lacks its calibration"),
    ({"vss.severity_edges": "[3, 2, 1]"}, "three rising numbers"),
])
def test_a_model_that_does_not_fit_the_vssmodel_is_refused_at_start(kwargs: dict[str, Any], message: str) -> None:
    task = AnomalyTask(AnomalyParams())
    with pytest.raises(RuntimeError, match=message):
        task.configure(config(**kwargs))


def test_an_image_predictor_is_refused_with_the_flag_to_drop() -> None:
    image = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}], "outputs": []}
    with pytest.raises(RuntimeError, match="without --normalize"):
        AnomalyTask(AnomalyParams()).configure(image)


def test_warm_up_is_one_window_of_zeros_the_model_accepts() -> None:
    task = AnomalyTask(AnomalyParams())
    task.configure(config())

    feeds, _ = task.prepare(task.warmup_request())

    assert feeds["series"].shape == (1, 100, 5) and feeds["series"].dtype == np.float32


def test_v2_tensors_and_the_v1_result_carry_the_verdict_fields() -> None:
    verdicts = judge(np.array([0.9, 0.1], np.float32), np.array([3.5, 0.0], np.float32),
                     np.array([[3.5, 3.0, 0, 0, 0], [0, 0, 0, 0, 0]], np.float32), FEATURES, CALIBRATION)

    tensors = as_v2_tensors(verdicts)
    v1 = as_v1_result(verdicts[0], FEATURES, 0.6, 0.0123)

    assert tensors["is_anomaly"].tolist() == [True, False]
    assert tensors["severity"].tolist() == [b"critical", b"none"]
    assert tensors["affected_features"].tolist() == [b"temperature,humidity", b""]
    assert tensors["feature_scores"].shape == (2, 5) and tensors["confidence"].dtype == np.float32
    assert v1["is_anomaly"] is True and v1["severity"] == "critical"
    assert v1["affected_features"] == ["temperature", "humidity"]
    assert set(v1) >= {"anomaly_score", "confidence", "feature_scores", "threshold", "processing_time"}
    json.dumps(v1)  # plain JSON types only


def test_a_batch_of_windows_gets_the_verdicts_each_window_gets_alone_and_the_same_v2_tensors() -> None:
    """64 windows judged at once (array operations) against each judged alone, and the batch's v2 tensors
    against those built window by window from its verdicts."""
    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 1, 64).astype(np.float32)
    scores[:3] = [0.6, np.nextafter(np.float32(0.6), np.float32(0)), 1.0]  # on, just under the threshold
    per_feature = rng.normal(0.5, 1.5, (64, 5)).astype(np.float32)
    per_feature[5] = [2.0, 2.0, -1, 0, 0]  # a tie: the earlier feature first
    per_feature[6] = [-1, -2, -3, -4, -5]  # nothing beyond normal: the strongest is still named
    evidence = per_feature.max(axis=1)
    evidence[7:10] = [1.0, 2.0, 3.0]  # on the band edges

    batch = judge(scores, evidence, per_feature, FEATURES, CALIBRATION)
    alone = [judge(scores[i:i + 1], evidence[i:i + 1], per_feature[i:i + 1], FEATURES, CALIBRATION)[0]
             for i in range(64)]

    assert len(batch) == 64 and 0 < sum(v.is_anomaly for v in batch) < 64
    for mine, single in zip(batch, alone, strict=True):
        assert (mine.is_anomaly, mine.anomaly_score, mine.confidence, mine.severity, mine.affected_features) == (
            single.is_anomaly, single.anomaly_score, single.confidence, single.severity, single.affected_features)
        np.testing.assert_array_equal(mine.feature_scores, single.feature_scores)
    assert [v.severity for v in batch[7:10]] == [
        severity_of(float(e), CALIBRATION.severity_edges) if s >= 0.6 else "none"
        for e, s in zip(evidence[7:10], scores[7:10], strict=True)]
    fast, slow = as_v2_tensors(batch), as_v2_tensors(list(batch))
    assert fast.keys() == slow.keys()
    for name in fast:
        assert fast[name].dtype == slow[name].dtype, name
        np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
