"""The chart's alert rules (charts/vss-serving/files/alerts): `promtool check rules` accepts the file, `promtool
test rules` passes its unit tests, every alert has a test that makes it fire, and the rules name only series the
processes export. promtool comes with Debian's prometheus package (`make system`); without it these fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.exported_metrics import exported_series, metric_names

ALERTS = Path(__file__).resolve().parents[3] / "charts" / "vss-serving" / "files" / "alerts"
RULES = ALERTS / "vss-serving.rules.yaml"
TESTS = sorted((ALERTS / "tests").glob("*.yaml"))


def promtool() -> str:
    found = os.environ.get("VSS_PROMTOOL") or shutil.which("promtool")
    if found is None:  # a missing promtool fails, never skips (`make test` installs it)
        pytest.fail("no promtool on PATH: `make system` installs Debian's prometheus package, or set VSS_PROMTOOL")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False)
    print(result.stdout + result.stderr)  # pytest shows it with -rP, and on a failure
    return result


def _rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_check_rules_accepts_the_file() -> None:
    result = _run("check", "rules", str(RULES))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_test_rules_passes() -> None:
    assert TESTS, "no rule tests"
    result = _run("test", "rules", *map(str, TESTS))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TESTS)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has a test where it fires (an exp_alerts entry) and one where it does not (exp_alerts [])."""
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {str(rule["alert"]) for rule in _rules()}

    assert alerts == {"VSSModelHighErrorRatio", "VSSModelHighLatency", "VSSModelPredictorNotReady",
                      "VSSModelRolledBack", "VSSStreamLagging"}
    assert alerts - fired == set() and alerts - quiet == set()


def test_every_alert_says_how_bad_and_what_happened() -> None:
    for rule in _rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]  # type: ignore[index]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]  # type: ignore[arg-type]


def test_the_rules_select_only_series_the_processes_export() -> None:
    exported = exported_series()
    for rule in _rules():
        names = metric_names(str(rule["expr"]))
        assert names and names <= exported, (rule["alert"], names - exported)
