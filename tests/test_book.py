"""The chapter notebooks follow the book's conventions (DESIGN.md, "The book").

Static checks of the stored notebooks, fast and independent of the site build:

* readers see the experiment, not its checks: no ``assert`` in a visible cell, no
  ``# NBVAL_CHECK_OUTPUT`` marker (the ``nbval-check-output`` tag does the same, unseen);
* chapters are cross-referenced (``{doc}``), never numbered by hand ("chapter 3");
* code lines fit the column (88 characters);
* every exercise says its level and time;
* every figure was drawn at the column's width (the book style: 7 in at 100 dpi);
* each notebook's hidden set-up cell installs prunekit from the repository set in
  ``_config.yml``.
"""

from __future__ import annotations

import base64
import re
import struct
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
HIDDEN = {"remove-cell", "remove-input"}
MAX_LINE = 88
# drawn at 7 in x 100 dpi = 700 px; "tight" bounding boxes trim or add a little
MIN_WIDTH, MAX_WIDTH = 560, 720

sys.path.insert(0, str(ROOT / "scripts"))
import set_repository  # noqa: E402


def _cells(path: Path):
    return nbformat.read(path, as_version=4).cells


def _hidden(cell) -> bool:
    return bool(HIDDEN & set(cell.metadata.get("tags", [])))


def _ids(paths):
    return [p.name for p in paths]


def test_there_are_chapter_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_no_checks_on_show(path):
    shown = []
    for i, cell in enumerate(_cells(path)):
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            if "NBVAL_CHECK_OUTPUT" in line:
                shown.append(f"cell {i}: {line.strip()} (use the nbval-check-output tag)")
            elif line.lstrip().startswith("assert ") and not _hidden(cell):
                shown.append(f"cell {i}: {line.strip()}")
    assert not shown, "checks readers would see (move them to a remove-cell cell):\n" + "\n".join(shown)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_numbers_of_record_are_checked(path):
    """Every chapter has at least one cell whose output nbval compares exactly."""
    tagged = [c for c in _cells(path) if "nbval-check-output" in c.metadata.get("tags", [])]
    assert tagged, "no cell tagged nbval-check-output"
    for cell in tagged:
        assert cell.outputs, "a checked cell must have stored outputs"


_CHAPTER_N = re.compile(r"\b[Cc]hapters? \d")


@pytest.mark.parametrize("path", NOTEBOOKS + sorted((ROOT / "book").glob("*.md")),
                         ids=_ids(NOTEBOOKS + sorted((ROOT / "book").glob("*.md"))))
def test_chapters_are_cross_referenced_not_numbered_by_hand(path):
    if path.suffix == ".ipynb":
        texts = [c.source for c in _cells(path) if c.cell_type == "markdown"]
    else:
        texts = [path.read_text(encoding="utf-8")]
    found = [m.group(0) for t in texts for m in _CHAPTER_N.finditer(re.sub(r"\{doc\}`[^`]*`", "", t))]
    assert not found, f"hard-coded chapter numbers (use {{doc}} links): {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_code_lines_fit_the_column(path):
    long = [f"cell {i}: {len(line)} chars: {line[:60]}…"
            for i, cell in enumerate(_cells(path)) if cell.cell_type == "code"
            for line in cell.source.splitlines() if len(line) > MAX_LINE]
    assert not long, f"code lines over {MAX_LINE} characters:\n" + "\n".join(long)


_EXERCISE = re.compile(r"`{3,}\{exercise\}[^\n]*\n(?::[^\n]*\n)*\s*([^\n]*)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_exercises_say_level_and_time(path):
    text = "\n".join(c.source for c in _cells(path) if c.cell_type == "markdown")
    firsts = _EXERCISE.findall(text)
    assert firsts, "a chapter ends with exercises"
    for first in firsts:
        assert re.match(r"\*\*Level:\*\* ★[★☆]{2} [\w-]+ · \*\*Time:\*\* \d+", first), first
    assert "for teachers" not in text.lower().split("## exercises")[-1], \
        "notes for teachers go to book/teachers.md, not into the student exercises"


def _png_width(data: bytes) -> int:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", data[16:20])[0]


def _images(path: Path):
    """(cell index, width) of every PNG a notebook shows: plain figures and slider frames."""
    for i, cell in enumerate(_cells(path)):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data:
                yield i, _png_width(base64.b64decode(data["image/png"]))
            for b64 in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", data.get("text/html", "")):
                yield i, _png_width(base64.b64decode(b64))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_figures_are_drawn_at_column_width(path):
    widths = list(_images(path))
    assert widths, "a chapter has figures"
    bad = [f"cell {i}: {w} px" for i, w in widths if not MIN_WIDTH <= w <= MAX_WIDTH]
    assert not bad, (f"figures must be drawn {MIN_WIDTH}-{MAX_WIDTH} px wide (7 in at 100 dpi, "
                     "viz.use_book_style()):\n" + "\n".join(bad))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_setup_cell_installs_prunekit_from_the_configured_repository(path):
    cells = _cells(path)
    found = set_repository.setup_cells(nbformat.read(path, as_version=4))
    assert found == [1], "the hidden set-up cell comes right after the title"
    cell = cells[1]
    assert cell.source == set_repository.setup_source(set_repository.repository_url()), \
        "out of step with repository.url in _config.yml: run python scripts/set_repository.py"
    assert "remove-cell" in cell.metadata.get("tags", [])


def test_setup_cell_source_runs_when_prunekit_is_installed():
    """The set-up cell is a no-op where prunekit is installed (it is, here), whatever the URL."""
    for url in ("", "https://github.com/someone/pruning-hands-on"):
        exec(compile(set_repository.setup_source(url), "setup-cell", "exec"), {})


def test_repository_setting_is_validated(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text("repository:\n  url: https://gitlab.com/a/b\n")
    with pytest.raises(ValueError, match="repository.url"):
        set_repository.repository_url(config)
    config.write_text("repository:\n  url: https://github.com/a/b/\n")
    assert set_repository.repository_url(config) == "https://github.com/a/b"
    config.write_text("repository:\n  url: ''\n")
    assert set_repository.repository_url(config) == ""


def test_student_edition_has_no_solutions_and_no_hidden_checks(tmp_path):
    import student_edition

    assert student_edition.main([str(tmp_path)]) == 0
    for path in NOTEBOOKS:
        original = nbformat.read(path, as_version=4)
        student = nbformat.read(tmp_path / path.name, as_version=4)
        text = "\n".join(c.source for c in student.cells)
        assert "{solution}" not in text
        assert "{exercise}" in text                       # the exercises stay
        n_exercises = sum(c.source.count("{exercise}") for c in original.cells)
        assert text.count("{exercise}") == n_exercises
        assert not any("assert " in c.source for c in student.cells
                       if "remove-cell" in c.metadata.get("tags", []))
        assert sum(c.source.startswith(set_repository.MARKER) for c in student.cells) == 1
        # every visible cell of the original is still there
        visible = [c.source for c in original.cells if not _hidden(c) and c.cell_type == "code"]
        assert visible == [c.source for c in student.cells
                           if c.cell_type == "code" and not _hidden(c)]


def test_every_reference_links_to_the_paper():
    """Each bibliography entry has a DOI, an arXiv id or (for papers with neither) a URL."""
    from pybtex.database import parse_file

    entries = parse_file(str(ROOT / "book" / "references.bib")).entries
    missing = [k for k, e in entries.items() if not {"doi", "eprint", "url"} & set(e.fields)]
    assert not missing, f"entries without DOI/arXiv/URL: {missing}"
    for key, e in entries.items():
        if "eprint" in e.fields:
            assert re.fullmatch(r"\d{4}\.\d{4,5}", e.fields["eprint"]), key
            assert e.fields.get("archiveprefix", "").lower() == "arxiv", key
