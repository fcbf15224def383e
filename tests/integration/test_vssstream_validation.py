"""The apiserver refuses invalid VSSStreams with the CRD's schema and CEL messages, and pydantic (what
`vss stream` and the operator read) refuses the same ones."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tests.support.apiserver import LocalCluster
from vss_api.vssstream import VSSStream

LINE = {"name": "road", "from": [0.0, 0.55], "to": [1.0, 0.55]}
ZONE = {"name": "kerb", "polygon": [[0, 0.8], [0.3, 0.8], [0.3, 1]]}
VALID: dict[str, Any] = {
    "apiVersion": "serving.vss.ai/v1alpha1",
    "kind": "VSSStream",
    "metadata": {"name": "gate-7"},
    "spec": {
        "source": {"url": "rtsp://camera-7.cameras.svc:8554/live", "credentials": {"secretName": "camera-7"}},
        "model": {"name": "detector"},
        "analytics": {"lines": [LINE], "zones": [ZONE]},
    },
}

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("credentials-in-url", {"source": {"url": "rtsp://admin:pw@camera-7:8554/live"}},
     "source.url must not carry credentials"),
    ("scheme", {"source": {"url": "ftp://camera-7/clip.mp4"}}, "should match '^(rtsps?|https?|file)://'"),
    ("no-model", {"model": {}}, "spec.model.name: Required value"),
    ("line-off-frame", {"analytics": {"lines": [{**LINE, "to": [1.5, 0.5]}]}},
     "should be less than or equal to 1"),
    ("duplicate-lines", {"analytics": {"lines": [LINE, LINE]}}, "Duplicate value"),
    ("line-named-like-a-zone", {"analytics": {"lines": [{**LINE, "name": "kerb"}], "zones": [ZONE]}},
     "analytics: line and zone names must be unique"),
    ("two-point-zone", {"analytics": {"zones": [{**ZONE, "polygon": ZONE["polygon"][:2]}]}},
     "should have at least 3 items"),
    ("live-and-fast", {"sampling": {"fps": 120}}, "should be less than or equal to 60"),
    ("unknown-tracker", {"tracking": {"tracker": "deepsort"}}, 'supported values: "bytetrack", "ocsort", "sort"'),
    ("unknown-field", {"camera": "gate"}, 'unknown field "spec.camera"'),
]


def _variant(change: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    doc["metadata"]["name"] = "bad"
    doc["spec"].update(change)
    return doc


def test_a_valid_stream_is_stored_with_the_defaults_pydantic_gives(
        k8s_cluster: LocalCluster, k8s_namespace: str) -> None:
    k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=yaml.safe_dump(VALID))
    stored = yaml.safe_load(k8s_cluster.kubectl("get", "vssstream", "gate-7", "-n", k8s_namespace,
                                                "-o", "yaml").stdout)

    parsed = VSSStream.model_validate(VALID).spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert stored["spec"]["sampling"] == parsed["sampling"]
    assert stored["spec"]["tracking"] == parsed["tracking"]
    assert stored["spec"]["analytics"]["lines"][0]["directions"] == ["in", "out"]


@pytest.mark.parametrize(("change", "message"), [(c, m) for _, c, m in INVALID], ids=[i for i, _, _ in INVALID])
def test_an_invalid_stream_is_refused_by_the_apiserver_and_by_pydantic(
        k8s_cluster: LocalCluster, k8s_namespace: str, change: dict[str, Any], message: str) -> None:
    doc = _variant(change)

    result = k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=yaml.safe_dump(doc), check=False)

    assert result.returncode != 0, f"accepted: {doc['spec']}"
    assert message in result.stderr, result.stderr
    with pytest.raises(ValidationError):
        VSSStream.model_validate(doc)
