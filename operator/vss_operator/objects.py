"""The plain data the operator's pure modules hand to its I/O layer: Kubernetes objects as JSON (`Manifest`)
and the Events to post about a VSSModel (`Event`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Manifest = dict[str, Any]
EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the VSSModel: `reason` is a CamelCase constant, `message` for a person."""

    type: EventType
    reason: str
    message: str
