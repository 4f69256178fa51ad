"""Split document text into overlapping chunks measured in the *student's* tokens.

    chunks = chunk_text(text, lambda s: len(tok.encode(s)), chunk_tokens=160, overlap=32)
    pieces = chunk_document(text, spans, count_tokens, 160, 32)   # with heading/page metadata

Chunk size is counted with the tokenizer of the model that reads the chunks, so retrieved context
fits its prompt budget; `knowledge.chunk_tokens` / `knowledge.chunk_overlap` set both. Separators
are Markdown-aware (headings, code fences, rules, paragraphs, lines, words), which also suits
plain text and the Markdown-like text the HTML, DOCX and PDF parsers produce.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from knowledge.errors import ConfigError
from knowledge.formats import Span


@dataclass(frozen=True)
class ChunkPiece:
    text: str
    start: int  # character offset in the document text
    heading: str | None = None
    page_start: int | None = None
    page_end: int | None = None


def count_words(text: str) -> int:
    """Default token counter: whitespace-separated words."""
    return len(text.split())


def _splitter(
    count_tokens: Callable[[str], int], chunk_tokens: int, overlap: int
) -> RecursiveCharacterTextSplitter:
    if chunk_tokens <= 0:
        raise ConfigError(f"chunk_tokens must be positive, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ConfigError(f"chunk_overlap must be in [0, {chunk_tokens}), got {overlap}")
    return RecursiveCharacterTextSplitter.from_language(
        Language.MARKDOWN,
        chunk_size=chunk_tokens,
        chunk_overlap=overlap,
        length_function=count_tokens,
    )


def chunk_text(
    text: str, count_tokens: Callable[[str], int], chunk_tokens: int, overlap: int
) -> list[str]:
    """Chunks of at most ~`chunk_tokens` tokens, neighbours sharing ~`overlap` tokens.

    Pieces too long for one chunk are split at ever finer separators, down to characters.
    Blank input gives [].
    """
    return [p.text for p in chunk_document(text, [], count_tokens, chunk_tokens, overlap)]


def chunk_document(
    text: str,
    spans: Sequence[Span],
    count_tokens: Callable[[str], int],
    chunk_tokens: int,
    overlap: int,
) -> list[ChunkPiece]:
    """`chunk_text` plus, per chunk, the heading at its start and the pages it spans."""
    splitter = _splitter(count_tokens, chunk_tokens, overlap)
    if not text.strip():
        return []
    ordered = sorted(spans, key=lambda s: s.start)
    starts = [s.start for s in ordered]
    pieces: list[ChunkPiece] = []
    previous, latest = -1, 0  # the last chunk's start, and the latest start the next may have
    for chunk in splitter.split_text(text):
        if not chunk.strip():
            continue
        # Chunks are stripped substrings of the text, in order, each starting inside the last one
        # (overlap) or right after it. Of the matches there, the last is the right one in text
        # that repeats itself. (The splitter's own start_index subtracts the overlap, counted in
        # tokens here, from a character offset: wrong for us.)
        found = text.rfind(chunk, previous + 1, latest + len(chunk))
        if found < 0:
            found = text.find(chunk, previous + 1)
        start = found if found >= 0 else max(previous, 0)
        previous = latest = start
        latest += len(chunk)
        while latest < len(text) and text[latest].isspace():
            latest += 1
        end = start + max(len(chunk) - 1, 0)
        first = bisect_right(starts, start) - 1
        last = bisect_right(starts, end) - 1
        heading = ordered[first].heading if first >= 0 else None
        pages = [s.page for s in ordered[max(first, 0) : last + 1] if s.page is not None]
        pieces.append(
            ChunkPiece(chunk, start, heading,
                       min(pages) if pages else None, max(pages) if pages else None)
        )  # fmt: skip
    return pieces
