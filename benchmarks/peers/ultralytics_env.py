"""The Ultralytics peer's own virtualenv, made by the benchmark under ~/.cache/vss and keyed by the pinned
version. Ultralytics is AGPL-3.0: it is only ever a peer to measure against, never a dependency of the
project (not in pyproject), and nothing of the project imports it.

    python benchmarks/peers/ultralytics_env.py          # make it (once; PyPI), print its python

Ultralytics asks for opencv-python (the GUI build); the headless build is installed instead with
`--no-deps` and Ultralytics' other requirements listed here, so it imports on a machine without libGL.
onnx and onnxslim are installed up front because the exporter would otherwise pip-install them at run time."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ULTRALYTICS = "ultralytics==8.4.190"
# Ultralytics' requirements but opencv-python, and the serving and export pieces the peer needs.
REQUIREMENTS = (
    "numpy<2.4", "matplotlib>=3.3.0", "opencv-python-headless>=4.6.0", "pillow>=7.1.2", "pyyaml>=5.3.1",
    "requests>=2.23.0", "scipy>=1.4.1", "torch>=1.8.0", "torchvision>=0.9.0", "psutil", "polars",
    "ultralytics-thop>=2.0.0", "onnx>=1.12.0,<2.0.0", "onnxslim>=0.1.71", "onnxruntime",
    "fastapi", "uvicorn", "python-multipart",
)
KEY = hashlib.sha256("\n".join((ULTRALYTICS, *REQUIREMENTS)).encode()).hexdigest()[:16]
VENV = Path(os.environ.get("VSS_CACHE", Path.home() / ".cache" / "vss")) / f"ultralytics-{KEY}"
PYTHON = VENV / "bin" / "python"


def offline_env(config_dir: Path) -> dict[str, str]:
    """The environment the peer runs in: no download at run time (YOLO_OFFLINE), settings in a folder of
    its own, one ONNX Runtime pool as a user's default leaves it."""
    config_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(config_dir), YOLO_VERBOSE="False",
               PATH=f"{VENV / 'bin'}:{env.get('PATH', '')}")
    return env


def ensure() -> Path:
    """The peer venv's python, made first if it is missing (a marker file says the install finished)."""
    done = VENV / ".complete"
    if done.exists():
        return PYTHON
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *REQUIREMENTS], check=True)
    subprocess.run([*pip, "--no-deps", ULTRALYTICS], check=True)
    subprocess.run([str(PYTHON), "-c", "import ultralytics, fastapi, uvicorn, onnxruntime, cv2"], check=True,
                   env=offline_env(VENV / "yolo-config"))
    done.write_text(ULTRALYTICS + "\n")
    return PYTHON


if __name__ == "__main__":
    print(ensure())
