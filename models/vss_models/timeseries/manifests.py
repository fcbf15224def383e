"""The manifests beside the built models: each file's sha256 and size, and a check that the files on
disk are still the ones the manifests name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFESTS = ("anomaly.manifest.json", "forecasting.manifest.json")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_entry(path: Path) -> dict[str, object]:
    return {"sha256": sha256_of(path), "bytes": path.stat().st_size}


def write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")


def verify(out: Path) -> list[str]:
    """Files whose sha256 differs from their manifest (empty when all match)."""
    wrong = []
    for manifest in MANIFESTS:
        for name, entry in json.loads((out / manifest).read_text())["files"].items():
            if not (out / name).is_file() or sha256_of(out / name) != entry["sha256"]:
                wrong.append(name)
    return wrong
