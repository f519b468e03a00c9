"""The kinds of value a model's config keys take (``Recommender.config_schema``), checked
without torch, so the command line can answer a bad value before it imports a model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mgrec.errors import UserError


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int+": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "int0": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "number": (_number, "a number"),
    "number+": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "fraction": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
}


def check_keys(config: Mapping[str, Any], **wanted: str) -> None:
    """Validate model keys: ``wanted`` maps a key to a kind of ``KINDS`` ('int+', 'int0',
    'number', 'number+' or 'fraction')."""
    for key, kind in wanted.items():
        test, description = KINDS[kind]
        if key not in config or not test(config[key]):
            raise UserError(
                f"config key '{key}' must be {description} for {config.get('model')}, "
                f"got {config.get(key)!r}"
            )
