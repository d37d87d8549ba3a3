"""How the reports' Mermaid ``xychart-beta`` charts keep their labels readable.

Mermaid lays a category axis's labels side by side, each centred on its slot, and neither turns
nor thins them: labels wider than their slot print on top of each other. Every chart that the
reports write therefore asks :func:`fits` first and, when the labels would crowd, draws its bars
horizontally (one row per category, :func:`horizontal_height` tall enough for each label) or
numbers its categories and lists the names in a :func:`legend` table under the chart.

Widths are estimated from the character count at Mermaid's 14 px tick labels, on the wide side
of the sans-serif fonts that GitHub's and Chromium's Mermaid fall back to; tools/mermaid_render.py
renders the charts with mermaid-cli and measures the real boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.core.formatting import cell

GREY, ORANGE, BLUE = "#9e9e9e", "#e8590c", "#1c7ed6"  # base or reference, PR or served, actual
WIDTH = 700  # Mermaid's default xychart width, in SVG units
PLOT_WIDTH = 560  # what the category axis keeps after the y-axis, its title and the end padding
CHAR_WIDTH = 9.0  # a 14 px label's widest average character width (capitals, wide digits)
GAP = 8.0  # room between two neighbouring labels
LESS = "\u2039"  # stands for "<" in a label (see quoted)
MAX_LABEL = 32  # characters of a category name on a horizontal chart's axis
MAX_TITLE = 60  # characters of a title (Mermaid's 20 px title runs off a 700-wide chart past ~70)
ROW_HEIGHT = 30  # SVG units per category of a horizontal bar chart (14 px labels and their gap)
MIN_HEIGHT, FRAME_HEIGHT = 300, 120  # a horizontal chart's least height; its title and top axis


def label_width(label: str) -> float:
    """The estimated width of a 14 px tick label, in SVG units."""
    return len(label) * CHAR_WIDTH


def fits(labels: Sequence[str], width: float = PLOT_WIDTH) -> bool:
    """Whether ``labels`` side by side on a ``width`` axis leave a gap between each two."""
    if not labels:
        return True
    slot = width / len(labels)
    return max(label_width(label) for label in labels) + GAP <= slot


def shorten(text: str, limit: int = MAX_LABEL) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut), its quotes made single."""
    text = text.replace('"', "'")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def quoted(labels: Sequence[str]) -> str:
    """Mermaid's list of category names: ``"a", "b"``.

    Mermaid's sanitizer prints a ``<`` in a label as the literal text ``&lt;``: it becomes
    :data:`LESS`, a single left angle quotation mark, which reads the same.
    """
    return ", ".join(f'"{shorten(label, 10_000).replace("<", LESS)}"' for label in labels)


def horizontal_height(categories: int) -> int:
    """A horizontal chart's height that gives each category a row its label fits in."""
    return max(MIN_HEIGHT, FRAME_HEIGHT + ROW_HEIGHT * categories)


def init(colours: str, height: int | None = None) -> str:
    """The ``%%{init}%%`` line: the lines' and bars' colours, and the chart's height if given."""
    size = f'"xyChart": {{"height": {height}}}, ' if height else ""
    return (
        "%%{init: {"
        + size
        + '"themeVariables": {"xyChart": {"plotColorPalette": "'
        + colours
        + '"}}}}%%'
    )


def legend(name: str, labels: Sequence[str]) -> list[str]:
    """A Markdown table that names the numbered categories ``1..n`` of a chart's axis."""
    numbers = range(1, len(labels) + 1)
    return [
        "| " + " | ".join(["#", *map(str, numbers)]) + " |",
        "|" + "---|" * (len(labels) + 1),
        "| " + " | ".join([name, *(cell(label, 40) for label in labels)]) + " |",
    ]
