"""Small helpers that turn a bad parameter into one clear ``ValueError`` naming it and its range."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


def check_range(
    name: str,
    value: float,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raise ``ValueError("<name> must be in [low, high], got value")`` unless ``value`` lies in the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(
            f"{name} must be a number in {_fmt_range(low, high, low_inclusive, high_inclusive)}, got {value!r}"
        )
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    if not (above and below):
        raise ValueError(
            f"{name} must be in {_fmt_range(low, high, low_inclusive, high_inclusive)}, got {value!r}"
        )


def check_int(name: str, value: int, low: int = 0, high: float = math.inf) -> None:
    """Raise unless ``value`` is an ``int`` in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer in {_fmt_range(low, high, True, True)}, got {value!r}")
    check_range(name, value, low, high)


def check_bool(name: str, value: bool) -> None:
    """Raise unless ``value`` is ``True`` or ``False`` (not a truthy string or number)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def _fmt_range(low: float, high: float, low_inclusive: bool, high_inclusive: bool) -> str:
    left = "[" if low_inclusive and low != -math.inf else "("
    right = "]" if high_inclusive and high != math.inf else ")"
    return f"{left}{_fmt(low)}, {_fmt(high)}{right}"


def _fmt(x: float) -> str:
    if x == math.inf:
        return "inf"
    if x == -math.inf:
        return "-inf"
    return f"{x:g}"


# ------------------------------------------------------------------------------------------------------------
# Valid ranges as dataclass field metadata (``field(default=..., metadata=number_range(0, 1))``): the configs'
# ``__post_init__`` checks enforce them; the metadata describes them (``contrastive-decoding methods``, the
# server's ``/v1/contrastive/methods``). A unit test checks that the two agree.
# ------------------------------------------------------------------------------------------------------------

RANGE_KEY = "range"


def number_range(
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
    nullable: bool = False,
) -> dict[str, dict]:
    """Field metadata for a number in ``[low, high]`` (``None`` for an open end, JSON-friendly)."""
    text = _fmt_range(low, high, low_inclusive, high_inclusive)
    return {
        RANGE_KEY: {
            "type": "int" if integer else "float",
            "min": None if low == -math.inf else low,
            "max": None if high == math.inf else high,
            "min_inclusive": low_inclusive and low != -math.inf,
            "max_inclusive": high_inclusive and high != math.inf,
            "nullable": nullable,
            "text": f"{'an integer' if integer else 'a number'} in {text}{' or null' if nullable else ''}",
        }
    }


def choice_range(choices: Iterable[str], *, items: dict | None = None) -> dict[str, dict]:
    """Field metadata for one of ``choices``, or with ``items`` (a :func:`number_range`) also a non-empty list
    of such numbers."""
    choices = list(choices)
    text = "one of " + ", ".join(repr(choice) for choice in choices)
    spec: dict = {"type": "choice", "choices": choices, "text": text}
    if items is not None:
        spec["items"] = items[RANGE_KEY]
        spec["text"] = f"{text}, or a non-empty list of items, each {items[RANGE_KEY]['text']}"
    return {RANGE_KEY: spec}


def text_list_range() -> dict[str, dict]:
    """Field metadata for a text, or a non-empty list of texts."""
    return {RANGE_KEY: {"type": "texts", "text": "a text, or a non-empty list of texts"}}


def bool_range() -> dict[str, dict]:
    return {RANGE_KEY: {"type": "bool", "text": "true or false"}}


def text_range(what: str = "a non-empty string", *, nullable: bool = False) -> dict[str, dict]:
    """Field metadata for a non-empty string (a path, a name), or null when ``nullable``."""
    return {
        RANGE_KEY: {"type": "text", "nullable": nullable, "text": f"{what}{' or null' if nullable else ''}"}
    }


def check_text(name: str, value: object, *, nullable: bool = False) -> None:
    """Raise unless ``value`` is a non-empty string (or None when ``nullable``)."""
    if value is None and nullable:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string{' or null' if nullable else ''}, got {value!r}")
