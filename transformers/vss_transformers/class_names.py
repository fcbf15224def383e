"""A model's class names, as the vision tasks read them from its Ultralytics `names` metadata, and the
label a result carries for a class id."""

from __future__ import annotations

import ast
from collections.abc import Sequence


def parse_names(text: str) -> tuple[str, ...]:
    """Class names from Ultralytics metadata, `{0: 'person', ...}` (a Python literal) or a list."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return ()
    if isinstance(value, dict):
        return tuple(str(value[k]) for k in sorted(value))
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return ()


def label_of(class_id: int, names: Sequence[str]) -> str:
    """The name of `class_id`, or `class_<id>` for an id the names do not cover."""
    return names[class_id] if 0 <= class_id < len(names) else f"class_{class_id}"
