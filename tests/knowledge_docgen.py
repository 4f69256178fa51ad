"""Real test documents, generated: PDFs (fpdf2), DOCX (python-docx), HTML, CSV, zip bombs.

Used by the knowledge tests (tests/test_formats.py and others); nothing here is a test.
"""

from __future__ import annotations

import io
import zipfile

from docx import Document as DocxDocument
from fpdf import FPDF


def make_pdf(pages: list[tuple[str | None, str]], title: str | None = None) -> bytes:
    """One page per (outline heading or None, body text); headings become PDF bookmarks."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    if title:
        pdf.set_title(title)
    for heading, body in pages:
        pdf.add_page()
        if heading:
            pdf.start_section(heading)
            pdf.set_font("helvetica", style="B", size=14)
            pdf.multi_cell(0, 8, heading, new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 6, body, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def make_docx(
    blocks: list[tuple[str, str]], title: str | None = None, table: list[list[str]] | None = None
) -> bytes:
    """blocks: ("title" | "h1" | "h2" | "p", text) in order; an optional table at the end."""
    document = DocxDocument()
    if title:
        document.core_properties.title = title
    for kind, text in blocks:
        if kind == "title":
            document.add_heading(text, level=0)
        elif kind.startswith("h"):
            document.add_heading(text, level=int(kind[1]))
        else:
            document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def add_zip_member(archive: bytes, name: str, data: bytes) -> bytes:
    """A copy of a ZIP (e.g. a DOCX) with one more, deflated, member."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def zip_bomb_docx(unpacked_bytes: int) -> bytes:
    """A real DOCX plus a member of `unpacked_bytes` zeros (deflate shrinks it ~1000x)."""
    base = make_docx([("p", "An innocent looking document.")])
    return add_zip_member(base, "word/media/image1.bin", bytes(unpacked_bytes))


def zip_of(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


HTML_PAGE = b"""<!DOCTYPE html>
<html><head><title>Security handbook</title><style>body { color: red }</style>
<script>var secret = "do not index me";</script></head>
<body>
<nav>Home | About</nav>
<h1>Security handbook</h1>
<p>Report a <b>lost laptop</b> to IT security within one hour.</p>
<h2>Passwords</h2>
<p>Passwords need at least 14 characters.<br>Rotate them yearly.</p>
<ul><li>Use the password manager</li><li>Never reuse a password</li></ul>
<table><tr><th>System</th><th>Owner</th></tr><tr><td>VPN</td><td>Netops</td></tr></table>
<!-- a comment that must not be indexed -->
</body></html>
"""
