"""`kubectl explain` on the real apiserver describes every field of the VSSModel and VSSStream CRDs, with the
words of the pydantic models' descriptions.

One `kubectl explain KIND.PATH` per object field prints that object's description and, under FIELDS, every
field of it with its description: explaining every object (the root, spec, status and each nested block)
reads every field at every depth, leaves included, in a few dozen calls.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.apiserver import LocalCluster, wait_until
from vss_operator import crd

# The apiserver publishes these from ObjectMeta and its own TypeMeta words, not from our schema.
_SERVER_OWNED = {"apiVersion", "kind", "metadata"}


def _words(text: str) -> str:
    """Text with its whitespace collapsed: kubectl wraps and indents descriptions."""
    return " ".join(text.split())


def _objects(root: dict[str, Any]) -> list[str]:
    """The paths kubectl explain lists FIELDS for: the root and every field that holds fields."""
    def holds_fields(node: dict[str, Any]) -> bool:
        while "properties" not in node and isinstance(node.get("items"), dict):
            node = node["items"]
        return "properties" in node

    return ["", *(path for path, node in crd.fields(root) if holds_fields(node) and path not in _SERVER_OWNED)]


def _children(root: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    node = root
    for name in [p for p in path.split(".") if p]:
        while "properties" not in node:
            node = node["items"]
        node = node["properties"][name]
    while "properties" not in node:
        node = node["items"]
    children: dict[str, dict[str, Any]] = node["properties"]
    return children


@pytest.mark.parametrize("definition", [crd.crd(), crd.stream_crd()], ids=["VSSModel", "VSSStream"])
def test_kubectl_explain_shows_the_description_of_every_field_at_every_depth(
    k8s_cluster: LocalCluster, definition: dict[str, Any],
) -> None:
    resource = definition["spec"]["names"]["shortNames"][0]
    root = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # The apiserver publishes a new CRD's OpenAPI a moment after it is Established.
    wait_until(lambda: k8s_cluster.kubectl("explain", f"{resource}.spec", check=False).returncode == 0,
               timeout=30, what=f"kubectl explain {resource}.spec")

    missing: list[str] = []
    checked = 0
    for path in _objects(root):
        target = f"{resource}.{path}" if path else resource
        shown = k8s_cluster.kubectl("explain", target).stdout
        fields = _words(shown.split("FIELDS:", 1)[1])
        for name, child in _children(root, path).items():
            if name in _SERVER_OWNED:
                continue
            checked += 1
            # kubectl prints `name\t<type>` then the description; the field's own line starts its entry.
            entry = re.search(rf"(?:^| ){re.escape(name)} <[^>]*>(?: -required-)? (.*?)(?= [A-Za-z0-9]+ <[^>]*>|$)",
                              fields)
            if entry is None or _words(child["description"]) not in entry.group(1):
                missing.append(f"{path}.{name}".lstrip("."))
    assert missing == [], f"kubectl explain {resource}: descriptions not shown for {missing}"
    assert checked == len([p for p, _ in crd.fields(root) if p.split(".")[0] not in _SERVER_OWNED])
