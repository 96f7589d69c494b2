"""User-written text written out as text: CSV cells no spreadsheet runs, Markdown shown as typed.

A file name, a reason or a note is written by one person and read by another. In a CSV a cell
starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is run as a formula by
Excel, LibreOffice and Google Sheets (``=HYPERLINK(...)`` turns into a link that sends data
away), so :func:`safe_cell` prefixes such text with an apostrophe, as OWASP recommends; numbers
are never touched. Every CSV the workbench writes goes through :func:`write_csv`, which applies
it to every cell. In Streamlit's Markdown, text like ``[here](http://...)``, ``**bold**``,
``:red[...]`` or ``$x$`` would render; :func:`escape_markdown` makes it show as typed.
"""
from __future__ import annotations

import csv
import math
import numbers
import re
from typing import Any, Iterable, Mapping, Sequence, TextIO

__all__ = ["safe_cell", "write_csv", "escape_markdown", "FORMULA_STARTS"]

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def safe_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as written: text that would start a formula gets ``'``.

    Parameters
    ----------
    value : any
        A cell. Numbers (and text that is exactly a number, such as ``"-1"``) are returned
        unchanged; so is text starting with anything but :data:`FORMULA_STARTS`.

    Returns
    -------
    any
        ``value``, or ``"'" + value`` for text starting with ``=``, ``+``, ``-``, ``@``, tab
        or carriage return.

    Examples
    --------
    >>> print(safe_cell('=HYPERLINK("http://x")'), safe_cell("@SUM(A1)"), safe_cell("a.png"))
    '=HYPERLINK("http://x") '@SUM(A1) a.png
    >>> safe_cell(-1), safe_cell(-0.5), safe_cell("-1")
    (-1, -0.5, '-1')
    """
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    if _NUMBER.fullmatch(value):
        return value
    return "'" + value


def _cell(value: Any) -> Any:
    """What ``csv`` writes for a cell: missing values (None, NaN) as empty, text made safe."""
    if value is None:
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isnan(value):
        return ""
    return safe_cell(value)


def write_csv(out: TextIO, columns: Sequence[str], rows: Iterable[Mapping[str, Any]], *,
              flush: bool = False) -> int:
    """Write a header and one line per row, every cell through :func:`safe_cell`.

    Parameters
    ----------
    out : text file
        Opened with ``newline=""`` when it is a file (the csv module's rule).
    columns : sequence of str
        The header, and which keys of each row are written, in order (missing keys: empty).
    rows : iterable of mappings
        Consumed one at a time, so a generator streams.
    flush : bool
        Flush ``out`` after every row (a long batch keeps what it finished if it is stopped).

    Returns
    -------
    int
        How many rows were written.

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> write_csv(buf, ["name", "count"], [{"name": "=1+1", "count": -1}, {"name": "a.png"}])
    2
    >>> print(buf.getvalue(), end="")
    name,count
    '=1+1,-1
    a.png,
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([safe_cell(c) for c in columns])
    n = 0
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
        n += 1
        if flush:
            out.flush()
    return n


def escape_markdown(text: Any) -> str:
    """``text`` with every ASCII punctuation mark backslash-escaped, so Markdown shows it as typed.

    CommonMark lets any ASCII punctuation be escaped; escaping all of it also stops Streamlit's
    additions (``:red[...]`` colours, ``:smile:`` emoji, ``$...$`` maths) and bare links
    (``http\\://`` is no longer a URL). Newlines become spaces: one line of text stays one line.

    >>> print(escape_markdown("**bold** [x](http://a.b) cells_1"))
    \\*\\*bold\\*\\* \\[x\\]\\(http\\:\\/\\/a\\.b\\) cells\\_1
    """
    flat = " ".join(str(text).splitlines())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)
