"""The chart's Grafana dashboard as the tests read it: the generator (hack/gen_dashboard.py) loaded as a module,
the committed JSON, each panel's queries, and the template variables substituted as Grafana would."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "hack" / "gen_dashboard.py"
DASHBOARD = ROOT / "charts" / "vss-serving" / "files" / "dashboards" / "vss-serving.json"


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_dashboard", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_dashboard"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref_id: str
    expr: str
    legend: str


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every query of every panel (rows hold none), in the dashboard's order."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets") or []:
            found.append(PanelQuery(panel["title"], target["refId"], target["expr"], target.get("legendFormat", "")))
    return found


def substitute(expr: str, values: dict[str, str]) -> str:
    """`$name`, `${name}` and `[[name]]` replaced by `values[name]` (a multi-value variable as Grafana formats
    it for Prometheus: `(a|b)`); an unknown variable is an error."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]", one, expr)
