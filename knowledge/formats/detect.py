"""Decide a file's kind from its content, checked against what its name claims.

    detect_kind("notes.txt", data)   # "text" | "markdown" | "csv" | "html" | "pdf" | "docx"

Content wins over names: a PDF renamed `.txt`, or a ZIP renamed `.pdf`, is refused as mislabeled
(rename it and upload again) rather than parsed as something it is not. A file without an
extension is taken for what its content is.
"""

from __future__ import annotations

import unicodedata
import zipfile
from io import BytesIO
from pathlib import PurePosixPath

from knowledge.errors import BadInputError, MislabeledDocumentError, UnsupportedDocumentError

KIND_BY_SUFFIX = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".csv": "csv",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}
MEDIA_TYPES = {
    "text": "text/plain",
    "markdown": "text/markdown",
    "csv": "text/csv",
    "html": "text/html",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
SUPPORTED_SUFFIXES = frozenset(KIND_BY_SUFFIX)
_TEXT_KINDS = {"text", "markdown", "csv", "html"}
# Signatures of formats we refuse, so the error can say what the file really is.
_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"MZ", "a Windows executable"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office file (.doc/.xls); save it as .docx"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
]
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")


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
    if looks_binary(text):
        raise BadInputError(f"{name!r} looks like binary data, not text")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise BadInputError(f"{name!r} has no text")
    return text


def looks_binary(text: str) -> bool:
    """Valid UTF-8 can still be binary (NUL bytes, UTF-16 ASCII, escape-laden dumps)."""
    controls = sum(
        1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS
    )
    return "\x00" in text or controls > max(1, len(text) // 100)


def sniff(data: bytes) -> str:
    """What the bytes are: "pdf", "docx", "zip", "html", "text", or a description of junk."""
    if not data:
        return "empty"
    if b"%PDF-" in data[:1024]:  # the spec lets the header sit anywhere in the first 1 KiB
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(BytesIO(data)) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, ValueError, OSError):
            return "damaged zip"  # named .docx: the DOCX parser reports it as corrupt
        return "docx" if "word/document.xml" in names else "zip"
    for magic, what in _MAGIC:
        if data.startswith(magic):
            return what
    try:
        head = data[:4096].decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError as exc:
        if exc.start < 4092:  # not just a multi-byte character cut at the sample's end
            # HTML may declare another charset (<meta charset=...>); its parser decodes it.
            start = data[:1024].lstrip().lower()
            if start.startswith((b"<!doctype html", b"<html")) and b"\x00" not in data[:4096]:
                return "html"
            return "binary data"
        head = data[: exc.start].decode("utf-8-sig")
    if looks_binary(head):
        return "binary data"
    lowered = head.lstrip().lower()
    if lowered.startswith(("<!doctype html", "<html")) or "<html" in lowered[:512]:
        return "html"
    return "text"


def detect_kind(name: str, data: bytes) -> str:
    """The parser to use for `name` holding `data`; raises if unsupported or mislabeled."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix and suffix not in KIND_BY_SUFFIX:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise UnsupportedDocumentError(
            f"{name!r}: unsupported file type {suffix!r}; supported: {supported}"
        )
    content = sniff(data)
    if content == "empty":
        raise BadInputError(f"{name!r} is empty")
    claimed = KIND_BY_SUFFIX.get(suffix)
    if claimed is None:  # no extension: the content decides
        if content in {"pdf", "docx", "html", "text"}:
            return content
        raise UnsupportedDocumentError(f"{name!r} is {_describe(content)}; not a supported type")
    if claimed == content or (claimed in _TEXT_KINDS and content in {"text", "html"}):
        return claimed  # Markdown and plain text may hold HTML; an .html file may be plain text
    if claimed == "docx" and content == "damaged zip":
        return "docx"  # the DOCX parser says what is wrong with it
    if claimed == "docx" and content == "zip":
        raise MislabeledDocumentError(f"{name!r} is a ZIP archive but not a Word document")
    if content == "binary data" and claimed in _TEXT_KINDS:
        raise BadInputError(f"{name!r} looks like binary data, not text")
    raise MislabeledDocumentError(
        f"{name!r} is named like {_describe(claimed)} but holds {_describe(content)}; "
        "rename it to match its content and upload again"
    )


def _describe(kind: str) -> str:
    return {
        "pdf": "a PDF document",
        "docx": "a Word document",
        "zip": "a ZIP archive",
        "damaged zip": "a damaged ZIP archive",
        "html": "an HTML page",
        "text": "a text file",
        "markdown": "a Markdown file",
        "csv": "a CSV file",
    }.get(kind, kind)
