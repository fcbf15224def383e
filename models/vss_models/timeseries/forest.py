"""The IsolationForest half of the anomaly detector and the graph surgery that serves both halves as one
ONNX model: the autoencoder's evidence goes to the forest (skl2onnx's TreeEnsemble, in the graph) and a
logistic fusion calibrated on validation windows turns the two into one probability.

One graph rather than a forest in the transformer: the forest then moves with the autoencoder through a
canary as one file with one sha256, is batched by the predictor with the rest, and the transformer
stays free of scikit-learn (and of any pickled estimator)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper
from sklearn.ensemble import IsolationForest

from vss_models.timeseries.sensors import F32

ONNX_OPSET = 18
ML_OPSET = 3


def fit_forest(evidence: F32, *, trees: int, seed: int) -> IsolationForest:
    """A forest over the log-evidence of normal windows [N, K]."""
    forest = IsolationForest(n_estimators=trees, max_samples=min(256, len(evidence)), random_state=seed)
    forest.fit(evidence.astype(np.float32))
    return forest


def forest_anomaly_score(forest: IsolationForest, evidence: F32) -> F32:
    """Higher for rarer windows: minus scikit-learn's `decision_function` (0 at its own boundary)."""
    scores: F32 = (-forest.decision_function(evidence.astype(np.float32))).astype(np.float32)
    return scores


def forest_graph(forest: IsolationForest, n_inputs: int, input_name: str) -> onnx.ModelProto:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skl2onnx warns about the opsets it downgrades to
        model: onnx.ModelProto = to_onnx(
            forest, initial_types=[(input_name, FloatTensorType([None, n_inputs]))],
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": ML_OPSET})
    return model


@dataclass(frozen=True)
class Fusion:
    """logit = evidence_weight * evidence + forest_weight * forest_score + bias; score = sigmoid(logit)."""

    evidence_weight: float
    forest_weight: float
    bias: float

    def logit(self, evidence: F32, forest_score: F32) -> F32:
        out: F32 = (self.evidence_weight * evidence + self.forest_weight * forest_score
                    + self.bias).astype(np.float32)
        return out

    def probability(self, evidence: F32, forest_score: F32) -> F32:
        out: F32 = (1.0 / (1.0 + np.exp(-self.logit(evidence, forest_score)))).astype(np.float32)
        return out


def fit_fusion(evidence: F32, forest_score: F32, is_anomaly: np.ndarray) -> Fusion:
    """Logistic regression of the labels of validation windows on the two scores."""
    from sklearn.linear_model import LogisticRegression

    x = np.stack([evidence, forest_score], axis=1).astype(np.float64)
    fit = LogisticRegression(C=10.0, max_iter=1000).fit(x, is_anomaly.astype(int))
    return Fusion(float(fit.coef_[0, 0]), float(fit.coef_[0, 1]), float(fit.intercept_[0]))


def fuse(evidence_graph: onnx.ModelProto, forest: onnx.ModelProto, fusion: Fusion,
         metadata: dict[str, str]) -> onnx.ModelProto:
    """One model: `series` -> `anomaly_score`, `evidence`, `feature_evidence`, `forest_score`.

    `evidence_graph` must output `forest_input` [N, K], `evidence` [N] and `feature_evidence` [N, F];
    `forest` reads `forest_input` and outputs skl2onnx's `scores` [N, 1] (its decision function)."""
    forest = compose.add_prefix(forest, "forest_")
    evidence_graph = _with_opsets(evidence_graph, forest)
    merged = compose.merge_models(
        evidence_graph, forest, io_map=[("forest_input", "forest_forest_input")],
        outputs=["evidence", "feature_evidence", "forest_scores"])
    graph = merged.graph
    graph.initializer.extend([
        numpy_helper.from_array(np.array(fusion.evidence_weight, np.float32), "fusion_evidence_weight"),
        numpy_helper.from_array(np.array(-fusion.forest_weight, np.float32), "fusion_forest_weight"),
        numpy_helper.from_array(np.array(fusion.bias, np.float32), "fusion_bias"),
        numpy_helper.from_array(np.array([-1], np.int64), "fusion_flat"),
    ])
    graph.node.extend([
        # skl2onnx's scores are the decision function (high = normal): the forest score is its negative,
        # folded into the weight.
        helper.make_node("Reshape", ["forest_scores", "fusion_flat"], ["forest_decision"]),
        helper.make_node("Neg", ["forest_decision"], ["forest_score"]),
        helper.make_node("Mul", ["evidence", "fusion_evidence_weight"], ["fusion_a"]),
        helper.make_node("Mul", ["forest_decision", "fusion_forest_weight"], ["fusion_b"]),
        helper.make_node("Add", ["fusion_a", "fusion_b"], ["fusion_ab"]),
        helper.make_node("Add", ["fusion_ab", "fusion_bias"], ["anomaly_logit"]),
        helper.make_node("Sigmoid", ["anomaly_logit"], ["anomaly_score"]),
    ])
    keep = {"evidence", "feature_evidence"}
    outputs = [o for o in graph.output if o.name in keep]
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, ["batch"]),
        *outputs,
        helper.make_tensor_value_info("forest_score", TensorProto.FLOAT, ["batch"]),
    ])
    merged.graph.name = "vss_anomaly_detector"
    del merged.metadata_props[:]
    onnx.helper.set_model_props(merged, metadata)
    onnx.checker.check_model(merged)
    return merged


def _with_opsets(model: onnx.ModelProto, other: onnx.ModelProto) -> onnx.ModelProto:
    """Both models on the same default opset, with the ML domain `other` uses declared."""
    model = onnx.version_converter.convert_version(model, ONNX_OPSET) if _default_opset(model) != ONNX_OPSET \
        else model
    domains = {o.domain for o in model.opset_import}
    for opset in other.opset_import:
        if opset.domain not in domains:
            model.opset_import.append(helper.make_opsetid(opset.domain, opset.version))
    return model


def _default_opset(model: onnx.ModelProto) -> int:
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))
