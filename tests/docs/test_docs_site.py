"""`make docs` builds the site with --strict: a broken link or a page left out of nav fails it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.columns import ROOT

MKDOCS = Path(sys.executable).parent / "mkdocs"


def build(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(root / "site")],
        cwd=root,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The docs and mkdocs.yml, copied where a test may break them."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy2(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    return tmp_path


def test_the_site_builds(site: Path) -> None:
    done = build(site)
    assert done.returncode == 0, done.stderr
    assert (site / "site" / "index.html").is_file()


@pytest.mark.parametrize(
    ("page", "text", "says"),
    [
        ("hooks.md", "[a page](no-such-page.md)", "no-such-page.md"),
        ("hooks.md", "[a section](data.md#no-such-section)", "#no-such-section"),
        ("hooks.md", "[a file](../params.yaml)", "../params.yaml"),
        ("orphan.md", "# Not in nav", "orphan.md"),
    ],
)
def test_a_broken_link_or_a_page_missing_from_nav_fails_the_build(
    site: Path, page: str, text: str, says: str
) -> None:
    path = site / "docs" / page
    path.write_text((path.read_text() if path.exists() else "") + f"\n{text}\n")
    done = build(site)
    assert done.returncode != 0
    assert says in done.stderr
