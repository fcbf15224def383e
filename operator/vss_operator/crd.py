"""The VSSModel and VSSStream CustomResourceDefinitions, generated from the pydantic models in
`vss_api.vssmodel` with `status.py`, and `vss_api.vssstream`.

`python -m vss_operator.crd` rewrites `crds/serving.vss.ai_vss{models,streams}.yaml` and the chart's copies; a
unit test fails when a file drifts from the models.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from vss_api.vssmodel import DNS_LABEL, GROUP, KIND, PLURAL, VERSION, VSSModelSpec, cel, kserve_name_rules
from vss_api.vssstream import STREAM_KIND, STREAM_PLURAL, VSSStreamSpec, VSSStreamStatus
from vss_operator.status import VSSModelStatus

SINGULAR = "vssmodel"
SHORT_NAMES = ("vssm",)
CATEGORIES = ("vss",)
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILE = f"{GROUP}_{PLURAL}.yaml"
STREAM_CRD_FILE = f"{GROUP}_{STREAM_PLURAL}.yaml"
MAX_NAME = 40

Schema = dict[str, Any]

# Keys a structural schema may keep, in the order they are written; everything else pydantic emits
# (title, $defs, …) is dropped.
_KEPT = (
    "description", "type", "format", "enum", "default", "pattern", "minimum", "exclusiveMinimum", "maximum",
    "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "minItems", "maxItems", "required",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "properties", "items", "additionalProperties",
    "x-kubernetes-validations",
)

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Version", "type": "string", "jsonPath": ".spec.version",
     "description": "The version that should serve"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canaryVersion",
     "description": "The version under a canary rollout"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight",
     "description": "Percent of traffic on the canary"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
     "description": "Stable, Progressing, Promoted, RolledBack or Failed"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Task", "type": "string", "jsonPath": ".spec.task", "priority": 1},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableVersion", "priority": 1,
     "description": "The version that serves the stable traffic"},
    {"name": "URL", "type": "string", "jsonPath": ".status.url", "priority": 1},
]


STREAM_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Source", "type": "string", "jsonPath": ".spec.source.url", "description": "Camera or recording"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "FPS", "type": "number", "jsonPath": ".status.fps", "description": "Frames inferred per second"},
    {"name": "Lag", "type": "number", "jsonPath": ".status.lagSeconds", "description": "Seconds behind live"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Connected", "type": "boolean", "jsonPath": ".status.source.connected", "priority": 1},
    {"name": "Reconnects", "type": "integer", "jsonPath": ".status.source.reconnects", "priority": 1},
]


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also publish `default_factory` defaults, so the apiserver fills the same defaults pydantic does.

    A nested model's default is written out whole: the apiserver checks a default against the CEL rules
    of its node without filling the nested defaults first. Empty maps get no default (nothing to fill)."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        if "default_factory" in schema and not schema.get("default_factory_takes_data"):
            value = schema["default_factory"]()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                return value.model_dump(mode="json", by_alias=True, exclude_none=True)
            return value if value != {} else NoDefault
        return schema.get("default", NoDefault)


def _structural(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Turn pydantic's JSON Schema into a Kubernetes structural schema: refs inlined, `X | None` as
    plain X (a null is pruned by the apiserver), draft-2020 exclusive bounds as OpenAPI v3 booleans."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"a structural schema cannot express a union: {options}")
        node = {**_structural(options[0], defs), **node}
    if node.get("default", 0) is None:
        del node["default"]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    for bound in ("Minimum", "Maximum"):
        value = node.get(f"exclusive{bound}")
        if value is not None and not isinstance(value, bool):
            node[bound.lower()] = value
            node[f"exclusive{bound}"] = True
    out: Schema = {k: node[k] for k in _KEPT if k in node}
    if "description" in out:
        # A docstring's line breaks are the source's wrapping; kubectl wraps on its own (blank lines stay).
        out["description"] = re.sub(r"(?<!\n)\n(?!\n)", " ", out["description"])
    if "properties" in out:
        out["properties"] = {k: _structural(v, defs) for k, v in out["properties"].items()}
        out.setdefault("type", "object")
    if "items" in out:
        out["items"] = _structural(out["items"], defs)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(out["additionalProperties"], defs)
    return out


def fields(schema: Schema, path: str = "") -> list[tuple[str, Schema]]:
    """Every field under `schema` with its dotted path as `kubectl explain` spells it (`spec.rollout.steps.weight`:
    a list's items and a map's values are no fields of their own), depth first."""
    found: list[tuple[str, Schema]] = []
    node = schema
    while "properties" not in node and isinstance(node.get("items"), dict):
        node = node["items"]
    for name, child in node.get("properties", {}).items():
        child_path = f"{path}.{name}" if path else name
        found.append((child_path, child))
        found.extend(fields(child, child_path))
    return found


def openapi_schema(model: type[BaseModel], *, defaults: bool = True) -> Schema:
    """The structural OpenAPI v3 schema of a pydantic model, camelCase field names."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults)
    defs = raw.pop("$defs", {})
    schema = _structural(raw, defs)
    return schema if defaults else _without_defaults(schema)


def _without_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def crd() -> dict[str, Any]:
    """The VSSModel CustomResourceDefinition as a dict."""
    return _definition(
        kind=KIND, plural=PLURAL, singular=SINGULAR, short_names=SHORT_NAMES, columns=PRINTER_COLUMNS,
        spec=openapi_schema(VSSModelSpec), spec_description="What to serve and how to roll it out.",
        status=openapi_schema(VSSModelStatus, defaults=False),
        description="A model served by KServe InferenceServices, one per version, rolled out by canary.",
        name_rule=cel(
            f"size(self.metadata.name) <= {MAX_NAME} && self.metadata.name.matches('{DNS_LABEL}')",
            f"metadata.name must be a DNS label of at most {MAX_NAME} characters "
            "(it prefixes the names of the InferenceServices)"),
        extra_rules=kserve_name_rules())


def stream_crd() -> dict[str, Any]:
    """The VSSStream CustomResourceDefinition as a dict."""
    return _definition(
        kind=STREAM_KIND, plural=STREAM_PLURAL, singular="vssstream", short_names=("vsss",),
        columns=STREAM_PRINTER_COLUMNS, spec=openapi_schema(VSSStreamSpec),
        spec_description="The camera or recording, the model that reads it, and what to count.",
        status=openapi_schema(VSSStreamStatus, defaults=False),
        description="A video stream decoded, inferred by a VSSModel, tracked and turned into line and zone events.",
        name_rule=cel(
            f"size(self.metadata.name) <= {MAX_NAME} && self.metadata.name.matches('{DNS_LABEL}')",
            f"metadata.name must be a DNS label of at most {MAX_NAME} characters (it names the worker)"))


def _definition(*, kind: str, plural: str, singular: str, short_names: tuple[str, ...],
                columns: list[dict[str, Any]], spec: Schema, spec_description: str, status: Schema,
                description: str, name_rule: dict[str, str],
                extra_rules: list[dict[str, str]] | None = None) -> dict[str, Any]:
    root: Schema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            # controller-gen's words, so `kubectl explain` reads as it does for built-in kinds.
            "apiVersion": {"type": "string", "description": (
                "APIVersion defines the versioned schema of this representation of an object. Servers should "
                "convert recognized schemas to the latest internal value, and may reject unrecognized values.")},
            "kind": {"type": "string", "description": (
                "Kind is a string value representing the REST resource this object represents. Servers may "
                "infer this from the endpoint the client submits requests to. In CamelCase.")},
            # The apiserver refuses anything but a type here and explains metadata as ObjectMeta itself.
            "metadata": {"type": "object"},
            "spec": {"description": spec_description, **spec},
            # The operator writes status; defaults there would only hide what it did not write.
            "status": {"description": "What the operator observed (kstatus conditions Ready, Reconciling, "
                                      "Stalled).", **status},
        },
        "x-kubernetes-validations": [name_rule, *(extra_rules or [])],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "vss-serving", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": copy.deepcopy(columns),
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Quotes the strings YAML 1.1 reads as booleans (`y`, `n`, ...), which PyYAML writes bare: kubectl's
    parser would turn a field named `y` into `true`. Never writes anchors and aliases: a model used in two places
    (a label selector) is written out in both."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if value.lower() in {"y", "n", "yes", "no", "on", "off", "true", "false"} else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)


def crd_yaml() -> str:
    header = ("# Generated by `python -m vss_operator.crd` from api/vss_api/vssmodel.py and\n"
              "# operator/vss_operator/status.py. Do not edit: change the models and regenerate.\n")
    return header + _dump(crd())


def stream_crd_yaml() -> str:
    header = ("# Generated by `python -m vss_operator.crd` from api/vss_api/vssstream.py.\n"
              "# Do not edit: change the models and regenerate.\n")
    return header + _dump(stream_crd())


def default_path(file: str = CRD_FILE) -> Path:
    """`crds/<file>` at the repository root (this file lives in operator/vss_operator/)."""
    return Path(__file__).resolve().parents[2] / "crds" / file


def chart_path(file: str = CRD_FILE) -> Path:
    """The chart's copy (Helm cannot read files outside the chart), templated by crd-vssmodels.yaml."""
    return Path(__file__).resolve().parents[2] / "charts" / "vss-serving" / "files" / file


def main(argv: list[str] | None = None) -> int:
    """Write the CRD to the given path, or to crds/ and the chart's copy."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        Path(args[0]).parent.mkdir(parents=True, exist_ok=True)
        Path(args[0]).write_text(crd_yaml())
        print(f"wrote {args[0]}")
        return 0
    for file, text in ((CRD_FILE, crd_yaml()), (STREAM_CRD_FILE, stream_crd_yaml())):
        for path in (default_path(file), chart_path(file)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
