"""How numbers and untrusted text are printed in every report, comment and card.

One rule for a number (fixed digits; ``n/a`` for a missing, NaN or infinite value) and one for
a Markdown table cell.
"""

from __future__ import annotations

import math
from typing import Any

NA = "n/a"  # a number that is missing or undefined (NaN, infinite)


def cell(value: Any, limit: int = 80) -> str:
    """Text safe inside a markdown table cell (the PR's params are untrusted input)."""
    text = " ".join(str(value).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("`", "'")):
        text = text.replace(raw, escaped)
    return text


def number(value: float | None, digits: int = 6, signed: bool = False) -> str:
    """``value`` with ``digits`` digits (and its sign, if ``signed``), or :data:`NA`."""
    if value is None or not math.isfinite(value):
        return NA
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
