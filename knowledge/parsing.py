"""Turn an uploaded file (name + bytes) into clean text, a title and citation spans.

    parsed = parse_document("handbook.pdf", data)   # ParsedDocument(name, title, text, ...)
    files = collect_files([Path("docs/")])           # supported files under folders, recursively

Formats: .txt, .md, .csv, .html, .pdf, .docx, detected by content (knowledge/formats/detect.py).
Everything an upload can get wrong is a `BadInputError` (400) with a message meant for the user;
a type we cannot read is an `UnsupportedDocumentError` (415), a name contradicting the content a
`MislabeledDocumentError` (415), a damaged or bomb-like PDF/DOCX a `CorruptDocumentError` (400).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from knowledge.errors import BadInputError, NotFoundError
from knowledge.formats import Extracted, Limits, Span
from knowledge.formats.detect import MEDIA_TYPES, SUPPORTED_SUFFIXES, decode_text, detect_kind
from knowledge.formats.docx import parse_docx
from knowledge.formats.html import parse_html
from knowledge.formats.pdf import parse_pdf
from knowledge.formats.text import parse_csv, parse_markdown, parse_text

__all__ = ["ParsedDocument", "collect_files", "decode_text", "parse_document", "sanitize_name"]

MAX_NAME_CHARS = 200
_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")
MAX_TITLE_CHARS = 200
PARSERS: dict[str, Callable[[str, bytes, Limits], Extracted]] = {
    "text": parse_text,
    "markdown": parse_markdown,
    "csv": parse_csv,
    "html": parse_html,
    "pdf": parse_pdf,
    "docx": parse_docx,
}


@dataclass(frozen=True)
class ParsedDocument:
    name: str
    title: str
    text: str
    media_type: str
    spans: list[Span] = field(default_factory=lambda: [Span(0)])


def sanitize_name(name: str) -> str:
    """The stored file name: the bare name, NFKC-folded, trimmed; refused when not usable.

    Kept as given except for what people cannot see anyway: NFKC folds look-alike forms
    (full-width letters, ligatures) so names compare as people read them, a directory part is
    dropped (either slash), surrounding spaces go. Everything else that would make two distinct
    names one (issue 11: ".md", "...md" and names of invisible characters all became "md"; two
    300-character names became one) is refused with BadInputError saying why: invisible, control
    or bidi characters, a leading dot, no letter, digit or symbol before the extension, more than
    MAX_NAME_CHARS characters. The upload's answer shows the stored name.
    """
    if not isinstance(name, str) or not name.strip():
        raise BadInputError("a file name is required")
    shown = name[:80]
    name = unicodedata.normalize("NFKC", name)
    if name.rstrip().endswith(("/", "\\")):  # a folder, not a file
        raise BadInputError(f"invalid file name {shown!r}: it names a folder")
    # Either slash counts as a directory separator, whatever the uploader's OS.
    base = PurePosixPath(name.replace("\\", "/")).name.strip()
    hidden = sorted({f"U+{ord(ch):04X}" for ch in base if _invisible(ch)})
    if hidden:
        raise BadInputError(
            f"invalid file name {shown!r}: it contains invisible, control or bidi characters "
            f"({', '.join(hidden[:5])}); rename the file"
        )
    if not base or base.startswith("."):
        raise BadInputError(
            f"invalid file name {shown!r}: a name may not start with '.' or be only an extension"
        )
    stem = PurePosixPath(base).stem if PurePosixPath(base).suffix else base
    if not any(unicodedata.category(ch)[0] in "LNS" for ch in stem):
        raise BadInputError(
            f"invalid file name {shown!r}: no letter, digit or symbol before the extension"
        )
    if len(base) > MAX_NAME_CHARS:
        raise BadInputError(
            f"the file name is {len(base):,} characters; the limit is {MAX_NAME_CHARS} "
            "(shortening it could make two names one): rename the file"
        )
    return base


def _invisible(ch: str) -> bool:
    """Control, format (bidi, zero-width), surrogate, unassigned or line/paragraph separators;
    spaces other than the plain one (NFKC already made most of them plain)."""
    category = unicodedata.category(ch)
    return category in {"Cc", "Cf", "Cs", "Cn", "Co", "Zl", "Zp"} or (
        category == "Zs" and ch != " "
    )


def find_title(text: str, name: str, markdown: bool = False) -> str:
    """First Markdown heading (for .md), else the first non-blank line, else the file name."""
    from knowledge.formats.text import markdown_extracted

    title = (markdown_extracted(text).title or "") if markdown else ""
    lines = (line.strip() for line in text.splitlines() if line.strip())
    title = title or next((line.lstrip("#").strip() for line in lines), "")
    return clip_title(title or PurePosixPath(name).stem)


def clip_title(title: str) -> str:
    title = " ".join(title.split())
    if len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 1].rstrip() + "…"
    return title


def parse_document(name: str, data: bytes, limits: Limits | None = None) -> ParsedDocument:
    """Sanitise the name, detect the type from the content, extract text, title and spans."""
    clean = sanitize_name(name)
    if not data:
        raise BadInputError(f"{clean!r} is empty")
    kind = detect_kind(clean, data)
    extracted = PARSERS[kind](clean, data, limits or Limits())
    # Control characters (PDF extraction yields some) become spaces: PostgreSQL refuses NUL in
    # text, and the same length keeps the spans' offsets right.
    text = _CONTROLS.sub(" ", extracted.text)
    if not text.strip():
        raise BadInputError(f"{clean!r} has no text")
    title = clip_title(_CONTROLS.sub(" ", extracted.title or "")) or find_title(text, clean)
    spans = extracted.spans or [Span(0)]
    return ParsedDocument(clean, title, text, MEDIA_TYPES[kind], spans)


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
