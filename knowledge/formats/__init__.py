"""File formats: content sniffing and one parser per format, all producing `Extracted`.

    kind = detect_kind("report.pdf", data)          # "pdf" (or raises: unsupported / mislabeled)
    extracted = PARSERS[kind](name, data, limits)   # Extracted(title, text, spans)

`knowledge.parsing.parse_document` is the entry point the store uses; this package holds the
per-format details. Every parser raises `BadInputError` subclasses with messages meant for users.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """From `start` (a character offset in the text) until the next span: this heading and page."""

    start: int
    heading: str | None = None  # heading path, e.g. "Vacation policy > Requesting leave"
    page: int | None = None  # 1-based page number (PDF)


@dataclass(frozen=True)
class Limits:
    max_unpacked_bytes: int = 50_000_000
    max_text_chars: int = 2_000_000
    max_pages: int = 2_000
    max_depth: int = 256  # element / XML / outline nesting (knowledge.max_nesting_depth)


@dataclass(frozen=True)
class Extracted:
    title: str | None  # None: the caller derives one (first line, else the file name)
    text: str
    spans: list[Span] = field(default_factory=list)


class HeadingPath:
    """The stack of open headings: level-2 heading under a level-1 one gives "A > B"."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []

    def enter(self, level: int, heading: str) -> str:
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, heading))
        return " > ".join(h for _, h in self._stack)
