"""PDF: text per page (pypdf), page numbers and outline (bookmark) headings as spans.

Scanned PDFs (images only) have no text to extract and are refused with that reason; OCR is out of
scope. pypdf's own limits guard against decompression bombs in streams; pages, text and the
outline's nesting are capped by `Limits` too, and the parse's time by the child process it runs in
(knowledge/parse_worker.py).
"""

from __future__ import annotations

import logging
from io import BytesIO

from knowledge.errors import BadInputError, CorruptDocumentError, TooComplexError
from knowledge.formats import Extracted, Limits, Span
from knowledge.formats.text import _checked

log = logging.getLogger(__name__)


def parse_pdf(name: str, data: bytes, limits: Limits) -> Extracted:
    import pypdf

    # pypdf logs every repair it makes ("EOF marker not found") as a warning; the outcome is ours.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = pypdf.PdfReader(BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise BadInputError(f"{name!r} is password-protected; upload an unprotected copy")
        n_pages = len(reader.pages)
        if n_pages > limits.max_pages:
            raise BadInputError(
                f"{name!r} has {n_pages:,} pages; the limit is {limits.max_pages:,}"
            )
        texts: list[str] = []
        total = 0
        for page in reader.pages:
            text = (page.extract_text() or "").replace("\r\n", "\n").replace("\r", "\n")
            total += len(text)
            if total > limits.max_text_chars:
                raise BadInputError(
                    f"{name!r} holds more than {limits.max_text_chars:,} characters of text"
                )
            texts.append(text.strip())
        outline = _outline(reader, limits.max_depth)
        title = str((reader.metadata or {}).get("/Title") or "").strip() or None
    except BadInputError:
        raise
    except pypdf.errors.LimitReachedError as exc:  # pypdf's own bounds (outline depth, ...)
        raise TooComplexError(
            f"{name!r} goes past a PDF reader limit ({exc}); refused as a possible parser bomb"
        ) from exc
    except Exception as exc:
        # pypdf signals damage with many exception types (its own, ValueError, KeyError,
        # NotImplementedError for garbled filter names, ...): all mean "cannot read this file".
        raise CorruptDocumentError(f"{name!r} is not a readable PDF: {exc}") from exc
    if not any(texts):
        raise BadInputError(
            f"{name!r} has no extractable text (a scanned PDF? OCR is not supported)"
        )
    parts, spans, offset = [], [], 0
    heading: str | None = None
    for number, text in enumerate(texts, start=1):
        marks = sorted(
            (_find(text, title_.rsplit(" > ", 1)[-1]), title_)
            for page, title_ in outline
            if page == number
        )
        spans.append(Span(offset, heading=heading, page=number))
        for position, title_ in marks:  # headings that start on this page, in page order
            heading = title_
            spans.append(Span(offset + max(position, 0), heading=heading, page=number))
        parts.append(text)
        offset += len(text) + 2
    return Extracted(title=title, text=_checked(name, "\n\n".join(parts), limits), spans=spans)


def _find(text: str, heading: str) -> int:
    position = text.find(heading)
    return position if position >= 0 else 0  # not found in the text: from the page's top


def _outline(reader, max_depth: int) -> list[tuple[int, str]]:  # noqa: ANN001
    """(1-based page, heading path) for every bookmark, nested ones as "A > B"."""
    found: list[tuple[int, str]] = []

    def walk(items, parents: tuple[str, ...]) -> None:  # noqa: ANN001
        last: tuple[str, ...] = parents
        if len(parents) > max_depth:
            raise TooComplexError(
                f"the PDF outline nests more than {max_depth:,} levels deep "
                "(knowledge.max_nesting_depth); refused as a possible parser bomb"
            )
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            title = str(getattr(item, "title", "") or "").strip()
            if not title:
                continue
            last = (*parents, title)
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # a bookmark to nowhere: skip it, keep the text
                continue
            if page is not None and page >= 0:
                found.append((page + 1, " > ".join(last)))

    from pypdf.errors import LimitReachedError

    try:
        walk(reader.outline, ())
    except (TooComplexError, LimitReachedError):
        raise
    except Exception:  # a broken outline (RecursionError in pypdf too) costs the headings only
        log.debug("unreadable PDF outline", exc_info=True)
    return found
