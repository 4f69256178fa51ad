"""Plain text, Markdown (headings become citation metadata) and CSV (rows become text lines)."""

from __future__ import annotations

import csv
import io
import re

from knowledge.errors import BadInputError
from knowledge.formats import Extracted, HeadingPath, Limits, Span
from knowledge.formats.detect import decode_text

# ATX heading; a closing run of #s only counts after a space (so "# C#" keeps its "#").
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.+?)(?:\s+#+)?\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
MAX_CSV_COLUMNS = 200


def parse_text(name: str, data: bytes, limits: Limits) -> Extracted:
    text = _checked(name, decode_text(name, data), limits)
    return Extracted(title=None, text=text, spans=[Span(0)])


def parse_markdown(name: str, data: bytes, limits: Limits) -> Extracted:
    text = _checked(name, decode_text(name, data), limits)
    return markdown_extracted(text)


def markdown_extracted(text: str) -> Extracted:
    """Spans at every ATX heading (outside code fences); title = the first heading."""
    spans, path, title = [Span(0)], HeadingPath(), None
    offset, fenced = 0, False
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line.rstrip("\n"))):
            heading = match.group(2).strip()
            title = title or heading
            spans.append(Span(offset, heading=path.enter(len(match.group(1)), heading)))
        offset += len(line)
    return Extracted(title=title, text=text, spans=spans)


def parse_csv(name: str, data: bytes, limits: Limits) -> Extracted:
    """Each row as one line, `column: value` pairs named by the header row."""
    raw = decode_text(name, data)
    try:
        dialect = csv.Sniffer().sniff(raw[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel  # one column, or too little to tell: commas
    try:
        rows = [row for row in csv.reader(io.StringIO(raw), dialect) if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise BadInputError(f"{name!r} is not valid CSV: {exc}") from exc
    if not rows:
        raise BadInputError(f"{name!r} has no rows")
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(rows[0])]
    if len(header) > MAX_CSV_COLUMNS:
        raise BadInputError(f"{name!r} has {len(header)} columns; at most {MAX_CSV_COLUMNS}")
    lines = [" | ".join(header)]
    for row in rows[1:]:
        pairs = [
            f"{header[i] if i < len(header) else f'column {i + 1}'}: {value.strip()}"
            for i, value in enumerate(row)
            if value.strip()
        ]
        lines.append("; ".join(pairs))
    text = _checked(name, "\n".join(lines) + "\n", limits)
    return Extracted(title=None, text=text, spans=[Span(0)])


def _checked(name: str, text: str, limits: Limits) -> str:
    if len(text) > limits.max_text_chars:
        raise BadInputError(
            f"{name!r} holds {len(text):,} characters of text; the limit is "
            f"{limits.max_text_chars:,}"
        )
    return text
