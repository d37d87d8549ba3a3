"""Render the reports' Mermaid charts as GitHub draws them and find labels a person cannot read.

mermaid-cli (``make mermaid-cli``, pinned by ``tools/mermaid/package-lock.json``) renders every
``mermaid`` block of a Markdown text to SVG in headless Chromium (Debian's ``chromium``). The SVGs
are then laid out once more in the same browser, which measures each text's box: two labels of
one axis whose boxes overlap print on top of each other, a box that leaves the SVG's viewBox is
cut off, and a category axis that shows fewer labels than it has categories has hidden them
(Mermaid drops an axis's labels when they do not fit).

Usage: ``python -m tools.mermaid_render reports/monitor.md`` prints each problem and exits 1 when
there is one.
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MMDC = ROOT / ".tools" / "mermaid-cli" / "node_modules" / ".bin" / "mmdc"
BROWSERS = ("chromium", "chromium-browser")
TOLERANCE = 0.5  # SVG units a text may pass the viewBox by (a glyph's antialiasing)
GAP = 2.0  # SVG units between two labels of one axis, below which they read as one ("0.0050.01")
TIMEOUT = 120

BLOCK = re.compile(r"```mermaid\n(.*?)```", re.DOTALL)
ENTITY = re.compile(r"&(?:[a-z]+|#[0-9]+|#x[0-9a-f]+);", re.IGNORECASE)  # "&lt;" drawn as is
CATEGORIES = re.compile(r"^\s*x-axis\s.*?\[(.*)\]\s*$", re.MULTILINE)

# Laid out in the browser: each SVG's viewBox and every text's box in the SVG's own units, with
# the classes of the groups it sits in (Mermaid names them: left-axis, bottom-axis, label, ...).
MEASURE = """
const charts = [...document.querySelectorAll("svg[data-chart]")].map((svg) => {
  const box = svg.viewBox.baseVal;
  const inverse = svg.getScreenCTM().inverse();
  const texts = [...svg.querySelectorAll("text")].map((text) => {
    const r = text.getBoundingClientRect();
    const a = new DOMPoint(r.left, r.top).matrixTransform(inverse);
    const b = new DOMPoint(r.right, r.bottom).matrixTransform(inverse);
    const groups = [];
    for (let g = text.parentElement; g && g !== svg; g = g.parentElement) {
      if (g.getAttribute("class")) groups.unshift(g.getAttribute("class"));
    }
    return {text: text.textContent, groups: groups.join(" "),
            box: [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y)]};
  });
  return {viewBox: [box.x, box.y, box.x + box.width, box.y + box.height], texts};
});
document.getElementById("boxes").textContent = JSON.stringify(charts);
"""


@dataclass(frozen=True)
class Label:
    """One text of a rendered chart: what it says, where (SVG units) and in which group."""

    text: str
    group: str  # the classes of its groups, outermost first, e.g. "main left-axis label"
    box: tuple[float, float, float, float]  # left, top, right, bottom

    def overlaps(self, other: Label) -> bool:
        """Whether the two boxes overlap or stand closer than :data:`GAP` (they read as one)."""
        return (
            min(self.box[2], other.box[2]) - max(self.box[0], other.box[0]) > -GAP
            and min(self.box[3], other.box[3]) - max(self.box[1], other.box[1]) > -GAP
        )


@dataclass(frozen=True)
class Rendered:
    """One chart as the browser drew it."""

    source: str  # the Mermaid text
    view_box: tuple[float, float, float, float]  # left, top, right, bottom
    labels: tuple[Label, ...]

    def axes(self) -> dict[str, list[Label]]:
        """The tick labels of each axis (the axis titles are apart), by axis group."""
        axes: dict[str, list[Label]] = {}
        for label in self.labels:
            words = label.group.split()
            axis = next((w for w in words if w.endswith("-axis")), None)
            if axis is not None and "label" in words:
                axes.setdefault(axis, []).append(label)
        return axes

    def problems(self) -> list[str]:
        """What a reader could not read: overlaps, cut-off texts, markup, hidden categories."""
        found = []
        for axis, labels in self.axes().items():
            for a, b in itertools.combinations(labels, 2):
                if a.overlaps(b):
                    found.append(f"{axis}: {a.text!r} overlaps {b.text!r}")
        left, top, right, bottom = self.view_box
        for label in self.labels:
            x0, y0, x1, y1 = label.box
            if (
                x0 < left - TOLERANCE
                or y0 < top - TOLERANCE
                or x1 > right + TOLERANCE
                or y1 > bottom + TOLERANCE
            ):
                found.append(f"{label.text!r} is cut off by the viewBox {self.view_box}")
        found += [
            f"{label.text!r} shows markup as text"
            for label in self.labels
            if ENTITY.search(label.text)
        ]
        categories = category_count(self.source)
        if categories is not None:
            shown = max((len(v) for v in self.axes().values()), default=0)
            if shown < categories:
                found.append(f"the category axis shows {shown} of its {categories} labels")
        return found


def category_count(source: str) -> int | None:
    """How many categories the chart's x-axis names, or None for a numeric axis."""
    match = CATEGORIES.search(source)
    if match is None:
        return None
    return len(re.findall(r'"(?:[^"\\]|\\.)*"|[^,\s][^,]*', match.group(1)))


def blocks(markdown: str) -> list[str]:
    """The text of every ``mermaid`` code block, in order."""
    return BLOCK.findall(markdown)


def tools() -> tuple[Path, str]:
    """The mermaid-cli and browser executables, or a RuntimeError saying how to install them."""
    mmdc = Path(os.environ.get("MMDC") or MMDC)
    if not mmdc.exists():
        raise RuntimeError(f"mermaid-cli is not installed at {mmdc}: run `make mermaid-cli` (npm)")
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        raise RuntimeError("chromium is not installed: apt-get install chromium")
    return mmdc, browser


def render(charts: list[str], workdir: Path) -> list[Rendered]:
    """Draw ``charts`` (Mermaid texts) with mermaid-cli, then measure every text in Chromium."""
    mmdc, browser = tools()
    config = workdir / "puppeteer.json"
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    config.write_text(json.dumps({"executablePath": browser, "args": ["--no-sandbox"]}))
    source = workdir / "charts.md"
    source.write_text("".join(f"```mermaid\n{c}```\n\n" for c in charts))
    done = subprocess.run(
        [str(mmdc), "--quiet", "-p", str(config), "-i", str(source), "-o", str(workdir / "out.md")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mmdc failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    svgs = [(workdir / f"out-{i}.svg").read_text() for i in range(1, len(charts) + 1)]
    return [
        Rendered(source, tuple(c["viewBox"]), tuple(labels(c["texts"])))
        for source, c in zip(charts, measure(svgs, browser, workdir), strict=True)
    ]


def labels(texts: list[dict[str, object]]) -> list[Label]:
    """The measured texts that show something."""
    return [
        Label(str(t["text"]), str(t["groups"]), tuple(t["box"]))  # type: ignore[arg-type]
        for t in texts
        if str(t["text"]).strip()
    ]


def measure(svgs: list[str], browser: str, workdir: Path) -> list[dict]:  # type: ignore[type-arg]
    """Each SVG's viewBox and text boxes, laid out by ``browser`` in one page."""
    # Each SVG's styles are scoped by its id: give every one its own, as GitHub's pages do.
    inline = [
        re.sub(r"my-svg", f"chart-{i}", svg).replace("<svg ", '<svg data-chart="" ', 1)
        for i, svg in enumerate(svgs)
    ]
    page = workdir / "measure.html"
    page.write_text(
        '<!doctype html><html><body style="width:900px">'
        + "".join(f"<div>{svg}</div>" for svg in inline)
        + f'<pre id="boxes"></pre><script>{MEASURE}</script></body></html>'
    )
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    found = re.search(r'<pre id="boxes">(.*?)</pre>', done.stdout, re.DOTALL)
    if done.returncode != 0 or found is None or not found.group(1):
        raise RuntimeError(f"{browser} measured nothing ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(html.unescape(found.group(1)))  # type: ignore[no-any-return]


def check(markdown: str) -> list[str]:
    """Every problem of every chart in ``markdown``, each prefixed with its chart's title."""
    charts = blocks(markdown)
    if not charts:
        return []
    with tempfile.TemporaryDirectory() as workdir:
        rendered = render(charts, Path(workdir))
    found = []
    for chart in rendered:
        title = re.search(r'title "(.*)"', chart.source)
        name = title.group(1) if title else chart.source.splitlines()[0]
        found += [f"{name}: {p}" for p in chart.problems()]
    return found


def main(argv: list[str] | None = None) -> int:
    """Check the charts of each Markdown file given; exit 1 when one is unreadable."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="Markdown files (reports)")
    args = parser.parse_args(argv)
    problems = [f"{f}: {p}" for f in args.files for p in check(f.read_text())]
    print("\n".join(problems) or "every chart is readable")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
