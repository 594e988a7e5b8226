"""One table formatter for dict rows: plain text for a terminal, Markdown for a book page.

``python -m dplab evaluate`` prints the text style; the chapters show the Markdown style with
``IPython.display.Markdown``. Both share the cell formatting: a per-column format spec or
callable, else floats with ``floatfmt`` and large integers with thousands separators.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

__all__ = ["format_table"]

_STYLES = ("text", "markdown")


def _cell(value, fmt, floatfmt: str, missing: str) -> str:
    if value is None:
        return missing
    if callable(fmt):
        return str(fmt(value))
    if fmt:
        return format(value, fmt)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, floatfmt)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10000:
        return f"{value:,}"
    return str(value)


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, *, style: str = "text",
                 headers: Sequence[str] | None = None, formats: Mapping[str, str | Callable] | None = None,
                 floatfmt: str = ".4f", missing: str | None = None) -> str:
    """Format dict rows as a table.

    Args:
        rows: dicts; a key a row lacks (or a None value) prints as ``missing``.
        columns: keys in column order (default: every key, in order of first appearance).
        style: ``"text"`` (aligned columns, numbers right-aligned) or ``"markdown"``.
        headers: column titles (default the keys).
        formats: ``{key: format spec or callable}``, e.g. ``{"psnr": ".2f"}``.
        floatfmt: format of other floats.
        missing: text for a missing value (default ``""`` for text, ``"–"`` for Markdown).

    Example:
        >>> rows = [{"image": "a", "psnr": 25.0}, {"image": "mean", "psnr": None}]
        >>> print(format_table(rows))
        image     psnr
        -----  -------
        a      25.0000
        mean
        >>> print(format_table(rows, style="markdown", formats={"psnr": ".1f"}))
        | image | psnr |
        | --- | --- |
        | a | 25.0 |
        | mean | – |
    """
    if style not in _STYLES:
        raise ValueError(f"style must be one of {list(_STYLES)}, got {style!r}")
    rows = list(rows)
    if columns is None:
        if not rows:
            return "(empty table)" if style == "text" else ""
        columns = list(dict.fromkeys(k for r in rows for k in r))
    columns = list(columns)
    if not columns:
        raise ValueError("columns is empty")
    headers = list(headers) if headers is not None else columns
    if len(headers) != len(columns):
        raise ValueError(f"headers has {len(headers)} entries for {len(columns)} columns")
    formats = dict(formats or {})
    missing = ("" if style == "text" else "–") if missing is None else missing
    cells = [[_cell(r.get(c) if isinstance(r, Mapping) else None, formats.get(c), floatfmt, missing)
              for c in columns] for r in rows]
    if style == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
    if not rows:
        return "(empty table)"
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])
