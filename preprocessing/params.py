"""One error shape for every configuration dataclass: name the parameter, the rule, the value."""

from __future__ import annotations

from typing import Any


def check_param(cond: bool, name: str, rule: str, value: Any) -> None:
    """Raise ``ValueError("The 'name' parameter must be rule. Got value instead.")`` unless
    ``cond`` holds (the message shape of scikit-learn's parameter validation)."""
    if not cond:
        raise ValueError(f"The '{name}' parameter must be {rule}. Got {value!r} instead.")
