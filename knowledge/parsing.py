"""Turn an uploaded file (name + bytes) into clean text and a title. Plain text and Markdown.

    parsed = parse_document("handbook.md", data)   # ParsedDocument(name, title, text, media_type)
    files = collect_files([Path("docs/")])          # the .txt/.md files to ingest, recursively

Everything an upload can get wrong is a `BadInputError` (400) with a message meant for the user;
a file type we cannot read is an `UnsupportedDocumentError` (415).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from knowledge.errors import BadInputError, NotFoundError, UnsupportedDocumentError

MEDIA_TYPES = {".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown"}
SUPPORTED_SUFFIXES = frozenset(MEDIA_TYPES)
MAX_NAME_CHARS = 200
MAX_TITLE_CHARS = 200
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")
# ATX heading; a closing run of #s only counts after a space (so "# C#" keeps its "#").
_HEADING = re.compile(r"^#{1,6}\s+(.+?)(?:\s+#+)?\s*$")


@dataclass(frozen=True)
class ParsedDocument:
    name: str
    title: str
    text: str
    media_type: str


def sanitize_name(name: str) -> str:
    """The bare file name: no directories, no `..`, no control characters, no leading dots.

    Raises BadInputError when nothing usable is left (e.g. "../..").
    """
    # Either slash counts as a directory separator, whatever the uploader's OS.
    base = PurePosixPath(name.replace("\\", "/")).name
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    base = base.strip().lstrip(".").strip()  # no hidden files, no "..", no " .md"
    if not base or not PurePosixPath(base).stem:
        raise BadInputError(f"invalid file name {name!r}")
    if len(base) > MAX_NAME_CHARS:
        suffix = PurePosixPath(base).suffix[:16]
        base = base[: MAX_NAME_CHARS - len(suffix)] + suffix
    return base


def media_type_for(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in MEDIA_TYPES:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise UnsupportedDocumentError(
            f"{name!r}: unsupported file type {suffix or '(none)'!r}; supported: {supported}"
        )
    return MEDIA_TYPES[suffix]


def decode_text(name: str, data: bytes) -> str:
    """Strict UTF-8 (a BOM is dropped), newlines normalised; binary or blank -> BadInputError."""
    if not data:
        raise BadInputError(f"{name!r} is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{name!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8 and upload again"
        ) from exc
    # Valid UTF-8 can still be binary (NUL bytes, UTF-16 ASCII, escape-laden dumps).
    controls = sum(
        1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS
    )
    if "\x00" in text or controls > max(1, len(text) // 100):
        raise BadInputError(f"{name!r} looks like binary data, not text")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise BadInputError(f"{name!r} has no text")
    return text


def find_title(text: str, name: str, markdown: bool) -> str:
    """First Markdown heading (for .md), else the first non-blank line, else the file name."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    title = ""
    if markdown:
        title = next((m.group(1) for line in lines if (m := _HEADING.match(line))), "")
    if not title and lines:
        title = lines[0].lstrip("#").strip()
    title = title or PurePosixPath(name).stem
    if len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 1].rstrip() + "…"
    return title


def parse_document(name: str, data: bytes) -> ParsedDocument:
    """Sanitise the name, check the type, decode and title the text."""
    clean = sanitize_name(name)
    media_type = media_type_for(clean)
    text = decode_text(clean, data)
    title = find_title(text, clean, markdown=media_type == "text/markdown")
    return ParsedDocument(name=clean, title=title, text=text, media_type=media_type)


def collect_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given plus supported files under folders (sorted, hidden ones skipped)."""
    found: dict[Path, None] = {}  # ordered set
    for path in map(Path, paths):
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and not hidden and child.suffix.lower() in SUPPORTED_SUFFIXES:
                    found.setdefault(child, None)
        elif path.is_file():
            found.setdefault(path, None)
        else:
            raise NotFoundError(f"{path}: no such file or folder")
    return list(found)
