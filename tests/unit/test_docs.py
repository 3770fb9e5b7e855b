"""The docs a newcomer reads: generated references that cannot drift from the code, a README
short enough to finish, and nothing that points outside the repository."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = REPO / "README.md"
README_MAX_LINES = 250


def generator():
    spec = importlib.util.spec_from_file_location("inferchaos_docs_gen", DOCS / "gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = generator()


def pages() -> list[Path]:
    """README.md and every text file under docs/ (the pages, the generator; not the images)."""
    return [README, *sorted(p for p in DOCS.rglob("*") if p.is_file() and p.suffix in (".md", ".py", ".yml"))]


def test_the_slo_reference_is_what_the_slo_file_says():
    assert (DOCS / "slo.md").read_text() == GEN.slo_markdown(), \
        "docs/slo.md differs from experiments/slo.toml: run .venv/bin/python docs/gen.py"


def test_the_cli_reference_is_what_the_parsers_say():
    committed = (DOCS / "cli.md").read_text()
    written_by = re.search(r"with Python (\d+\.\d+)", committed.splitlines()[0])
    if written_by and written_by.group(1) != GEN.python_version():
        pytest.skip(f"docs/cli.md was generated with Python {written_by.group(1)}, this is "
                    f"{GEN.python_version()}: argparse lays help out differently between versions")
    assert committed == GEN.cli_markdown(), \
        "docs/cli.md differs from the CLI's parsers: run .venv/bin/python docs/gen.py"


def test_the_readme_is_short_enough_to_finish():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"


def test_the_readme_keeps_its_two_commands_true():
    text = README.read_text()
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in text
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"the Makefile has no `{target}` target"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_nothing_points_outside_the_repository(page):
    text = page.read_text()
    for outside in ("../shared", "DESIGN.md"):
        assert outside not in text, f"{page.relative_to(REPO)} mentions {outside}"


def test_every_page_is_in_the_site_navigation():
    nav = (REPO / "mkdocs.yml").read_text()
    missing = [p.name for p in DOCS.glob("*.md") if p.name not in nav]
    assert not missing, f"mkdocs.yml's nav leaves out {', '.join(missing)}"


def test_relative_links_from_the_readme_resolve():
    """mkdocs --strict checks the links between docs/ pages; the README is outside the site."""
    text = README.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (REPO / target).exists():
            broken.append(target)
    assert not broken, f"README.md links to missing files: {broken}"
