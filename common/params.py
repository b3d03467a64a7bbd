"""One error shape for every configuration dataclass: name the parameter, the rule, the value."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Dict, Optional, Type, TypeVar

T = TypeVar("T")


def check_param(cond: bool, name: str, rule: str, value: Any) -> None:
    """Raise ``ValueError("The 'name' parameter must be rule. Got value instead.")`` unless
    ``cond`` holds (the message shape of scikit-learn's parameter validation)."""
    if not cond:
        raise ValueError(f"The '{name}' parameter must be {rule}. Got {value!r} instead.")


def dataclass_from_dict(cls: Type[T], raw: Optional[Dict[str, Any]], where: str) -> T:
    """``cls(**raw)`` for a config dataclass, with errors that say where the mapping came from:
    not a mapping, unknown keys (naming the known ones), or a field's own validation."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
    try:
        return cls(**raw)
    except ValueError as e:  # a field's validation: say which file and section it came from
        raise ValueError(f"{where}: {e}") from None
