"""Word (.docx): paragraphs and tables in document order; Title/Heading styles give headings.

A DOCX is a ZIP archive, so it is checked before python-docx opens it: member count, the total
size its members declare (`Limits.max_unpacked_bytes`) and each member's compression ratio. That
stops zip bombs without unpacking them. Python's zipfile never returns more than a member declares,
so a member lying about its size cannot get past the total either. python-docx parses XML with
entity resolution off, so "billion laughs" XML does not expand; the body's XML nesting is checked
first (`Limits.max_depth`).
"""

from __future__ import annotations

import zipfile
from io import BytesIO

from knowledge.errors import BadInputError, CorruptDocumentError, MislabeledDocumentError
from knowledge.formats import Extracted, HeadingPath, Limits, Span
from knowledge.formats.depth import check_xml_depth
from knowledge.formats.text import _checked

MAX_MEMBERS = 2_000
MAX_RATIO = 200  # real DOCX XML compresses about 5-20x; a bomb, hundreds to millions
_RATIO_FLOOR = 1_000_000  # small members may compress absurdly well (runs of spaces): ignore


def check_archive(name: str, data: bytes, limits: Limits) -> None:
    """Refuse damaged archives and decompression bombs before anything unpacks them."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CorruptDocumentError(f"{name!r} is not a readable Word document: {exc}") from exc
    if len(members) > MAX_MEMBERS:
        raise CorruptDocumentError(f"{name!r} holds {len(members):,} files; not a normal DOCX")
    total = sum(m.file_size for m in members)
    if total > limits.max_unpacked_bytes:
        raise CorruptDocumentError(
            f"{name!r} would unpack to {total:,} bytes (limit {limits.max_unpacked_bytes:,}): "
            "refused as a possible decompression bomb"
        )
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > _RATIO_FLOOR and ratio > MAX_RATIO:
            raise CorruptDocumentError(
                f"{name!r}: {member.filename} expands {ratio:,.0f}x; refused as a possible "
                "decompression bomb"
            )
    names = {m.filename for m in members}
    if "word/document.xml" not in names:
        raise MislabeledDocumentError(f"{name!r} is a ZIP archive but not a Word document")
    with zipfile.ZipFile(BytesIO(data)) as archive:  # sizes are checked above: safe to stream
        for member in ("word/document.xml", "word/styles.xml"):
            if member in names:
                with archive.open(member) as stream:
                    check_xml_depth(name, stream, limits.max_depth)


def parse_docx(name: str, data: bytes, limits: Limits) -> Extracted:
    check_archive(name, data, limits)
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(BytesIO(data))
        blocks = list(document.iter_inner_content())
        core_title = (document.core_properties.title or "").strip()
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, AttributeError) as exc:
        raise CorruptDocumentError(f"{name!r} is not a readable Word document: {exc}") from exc
    except Exception as exc:  # lxml's XMLSyntaxError and python-docx's own errors
        raise CorruptDocumentError(f"{name!r} is not a readable Word document: {exc}") from exc

    lines: list[str] = []
    spans, path = [Span(0)], HeadingPath()
    title, offset = core_title or None, 0

    def emit(line: str, heading: str | None = None) -> None:
        nonlocal offset
        if heading is not None:
            spans.append(Span(offset, heading=heading))
        lines.append(line)
        offset += len(line) + 2  # paragraphs are joined by a blank line

    for block in blocks:
        if isinstance(block, Paragraph):
            text = " ".join(block.text.split())
            if not text:
                continue
            level = _heading_level(block)
            if level is None:
                emit(text)
                continue
            title = title or text
            emit(f"{'#' * max(level, 1)} {text}", path.enter(max(level, 1), text))
        elif isinstance(block, Table):
            for row in block.rows:
                cells = [" ".join(c.text.split()) for c in row.cells]
                deduped = [c for i, c in enumerate(cells) if c and (i == 0 or c != cells[i - 1])]
                if deduped:  # merged cells repeat their text in every grid cell they cover
                    emit(" | ".join(deduped))
    text = "\n\n".join(lines)
    if not text.strip():
        raise BadInputError(f"{name!r} has no text")
    return Extracted(title=title, text=_checked(name, text + "\n", limits), spans=spans)


def _heading_level(paragraph) -> int | None:  # noqa: ANN001
    """0 for a Title paragraph, N for "Heading N", None for body text."""
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    if style == "Title":
        return 0
    if style.startswith("Heading"):
        digits = style.removeprefix("Heading").strip()
        return int(digits) if digits.isdigit() else 1
    return None
