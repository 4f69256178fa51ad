"""Every supported format and every bad input, with real files the tests generate.

    .venv/bin/python -m pytest tests/test_formats.py -q

PDFs come from fpdf2, Word files from python-docx, zip bombs are real DOCX archives with a huge
all-zero member. Each bad input must raise a clear error and leave SQL and Chroma untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from knowledge_docgen import HTML_PAGE, make_docx, make_pdf, zip_bomb_docx, zip_of
from sqlmodel import Session, func, select

from knowledge.embeddings import Embedder, get_embedder
from knowledge.errors import (
    BadInputError,
    CorruptDocumentError,
    MislabeledDocumentError,
    TooLargeError,
    UnsupportedDocumentError,
)
from knowledge.parsing import parse_document, sanitize_name
from knowledge.settings import KnowledgeConfig, Settings
from knowledge.store import KnowledgeStore
from knowledge.tables import Chunk, Document

HANDBOOK_PDF_PAGES = [
    ("Introduction", "Welcome to the Northwind employee handbook. " * 6),
    (None, "The introduction continues here with the history of the company. " * 3),
    ("Travel", "Book trains for trips under four hours; flights need approval. " * 5),
]


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return get_embedder()


@pytest.fixture
def store(tmp_path: Path, embedder: Embedder) -> KnowledgeStore:
    knowledge = KnowledgeConfig(
        chunk_tokens=30, chunk_overlap=6, max_upload_bytes=200_000, max_unpacked_bytes=4_000_000
    )
    return KnowledgeStore(Settings(home=tmp_path / "home", knowledge=knowledge))


def counts(store: KnowledgeStore) -> tuple[int, int, int]:
    with Session(store.engine) as session:
        documents = session.exec(select(func.count()).select_from(Document)).one()
        chunks = session.exec(select(func.count()).select_from(Chunk)).one()
    return documents, chunks, store.index.count()


# -- every format --------------------------------------------------------------------------------


def test_pdf_pages_and_outline_headings_become_chunk_metadata(store: KnowledgeStore) -> None:
    data = make_pdf(HANDBOOK_PDF_PAGES, title="Northwind Handbook")
    document = store.ingest_bytes("handbook.pdf", data).document
    assert document.media_type == "application/pdf" and document.title == "Northwind Handbook"
    chunks = store.chunks_for([document.id])
    assert {c.page_start for c in chunks} == {1, 2, 3}
    assert all(c.page_start <= c.page_end for c in chunks)
    page2 = [c for c in chunks if c.page_start == 2]
    assert page2 and all(c.heading == "Introduction" for c in page2)  # heading carries over
    assert {c.heading for c in chunks if c.page_start == 3} == {"Travel"}
    [hit] = store.retrieve("Do I take the train or a plane for a short trip?", k=1)
    assert (hit.name, hit.heading, hit.page_start) == ("handbook.pdf", "Travel", 3)
    assert "Book trains" in store.document_text(document.id)


def test_docx_headings_tables_and_title(store: KnowledgeStore) -> None:
    data = make_docx(
        [
            ("title", "Onboarding guide"),
            ("p", "Welcome aboard, new colleague."),
            ("h1", "First week"),
            ("p", "Meet your onboarding buddy on Monday at nine in the lobby."),
            ("h2", "Laptop"),
            ("p", "IT hands out laptops on the first day; bring your badge."),
        ],
        table=[["Day", "Task"], ["Tuesday", "Security training in room 4"]],
    )
    document = store.ingest_bytes("guide.docx", data).document
    assert document.title == "Onboarding guide" and document.media_type.endswith("document")
    text = store.document_text(document.id)
    assert "# First week" in text and "## Laptop" in text
    assert "Tuesday | Security training in room 4" in text
    [hit] = store.retrieve("When do I get my laptop?", k=1)
    assert hit.heading == "First week > Laptop" and hit.page_start is None


def test_html_visible_text_headings_and_title(store: KnowledgeStore) -> None:
    document = store.ingest_bytes("security.html", HTML_PAGE).document
    assert document.title == "Security handbook" and document.media_type == "text/html"
    text = store.document_text(document.id)
    assert "Report a lost laptop to IT security" in text  # inline tags keep their sentence
    assert "## Passwords" in text and "VPN | Netops" in text
    for hidden in ("do not index me", "color: red", "a comment"):
        assert hidden not in text
    [hit] = store.retrieve("How long must a password be?", k=1)
    assert hit.heading == "Security handbook > Passwords"


def test_csv_rows_become_text_lines(store: KnowledgeStore) -> None:
    data = b"name;team;office\nAna Lima;People;Lisbon\nBo Berg;Platform;Oslo\n"
    document = store.ingest_bytes("directory.csv", data).document
    assert document.media_type == "text/csv"
    text = store.document_text(document.id)
    assert "name: Bo Berg; team: Platform; office: Oslo" in text
    [hit] = store.retrieve("Which office is Bo Berg in?", k=1)
    assert "Oslo" in hit.text


def test_markdown_and_text_keep_their_exact_text(store: KnowledgeStore) -> None:
    body = "Take 27 days a year and plan them with your team well ahead. " * 3
    md = f"Intro line\n\n# Leave\n\n{body}\n\n## Sick leave\n\nCall in by nine. {body}\n"
    document = store.ingest_bytes("leave.md", md.encode()).document
    assert document.title == "Leave" and store.document_text(document.id) == md
    headings = {c.heading for c in store.chunks_for([document.id])}
    assert "Leave > Sick leave" in headings
    plain = store.ingest_bytes("notes.txt", b"Parking\nGarage B is for staff.\n").document
    assert plain.title == "Parking" and plain.media_type == "text/plain"


@pytest.mark.parametrize(
    ("name", "kind"),
    [("handbook", "application/pdf"), ("guide", "document"), ("page", "text/html")],
)
def test_content_decides_when_the_name_has_no_extension(name: str, kind: str) -> None:
    data = {
        "handbook": make_pdf(HANDBOOK_PDF_PAGES),
        "guide": make_docx([("p", "Plain words in a Word file.")]),
        "page": HTML_PAGE,
    }[name]
    assert parse_document(name, data).media_type.endswith(kind)


# -- bad inputs: clear errors, nothing changed ---------------------------------------------------

PDF = make_pdf(HANDBOOK_PDF_PAGES)
DOCX = make_docx([("h1", "Title"), ("p", "Body text of a real Word document.")])
PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)


@pytest.mark.parametrize(
    ("name", "data", "error", "message"),
    [
        ("empty.pdf", b"", BadInputError, "empty"),
        ("blank.txt", b"  \n\n", BadInputError, "no text"),
        ("junk.txt", bytes(range(256)) * 8, BadInputError, "binary"),
        ("junk.bin", bytes(range(256)) * 8, UnsupportedDocumentError, "unsupported"),
        ("tool.exe", b"MZ\x90\x00" + bytes(64), UnsupportedDocumentError, "unsupported"),
        ("sheet.xlsx", zip_of("xl/workbook.xml", b"<x/>"), UnsupportedDocumentError, ".xlsx"),
        ("report.txt", PDF, MislabeledDocumentError, "PDF"),
        ("report.pdf", DOCX, MislabeledDocumentError, "Word"),
        ("report.pdf", b"Just some words, not a PDF.", MislabeledDocumentError, "text"),
        ("report.docx", zip_of("notes.txt", b"hello"), MislabeledDocumentError, "ZIP"),
        ("report.docx", b"<html><body>hi</body></html>", MislabeledDocumentError, "HTML"),
        ("picture.md", PNG, MislabeledDocumentError, "PNG"),
        ("old.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), MislabeledDocumentError, ".doc"),
        ("broken.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 4, CorruptDocumentError, "PDF"),
        ("truncated.pdf", PDF[: len(PDF) // 3], BadInputError, "PDF"),
        ("broken.docx", b"PK\x03\x04" + bytes(range(256)) * 4, CorruptDocumentError, "Word"),
        ("truncated.docx", DOCX[: len(DOCX) // 2], CorruptDocumentError, "Word"),
        ("scan.pdf", make_pdf([(None, " ")]), BadInputError, "no extractable text"),
        ("../../", b"text", BadInputError, "invalid file name"),
        ("\u202e\u200b", b"text", BadInputError, "invalid file name"),
    ],
)  # fmt: skip
def test_bad_inputs_change_nothing(
    store: KnowledgeStore, name: str, data: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        store.ingest_bytes(name, data)
    assert counts(store) == (0, 0, 0)


@pytest.mark.parametrize("unpacked", [60_000_000, 3_000_000])
def test_zip_bombs_are_refused_without_unpacking(store: KnowledgeStore, unpacked: int) -> None:
    # 60 MB: over the total limit (4 MB here); 3 MB: under it, but expanding ~1000x.
    bomb = zip_bomb_docx(unpacked)
    assert len(bomb) < store.settings.knowledge.max_upload_bytes  # small on the wire
    with pytest.raises(CorruptDocumentError, match="decompression bomb"):
        store.ingest_bytes("bomb.docx", bomb)
    assert counts(store) == (0, 0, 0)


def test_oversized_uploads_are_refused_before_parsing(
    store: KnowledgeStore, tmp_path: Path
) -> None:
    big = b"word " * 50_000  # 250 kB > 200 kB
    with pytest.raises(TooLargeError, match="limit"):
        store.ingest_bytes("big.txt", big)
    (tmp_path / "big.txt").write_bytes(big)
    report = store.ingest_files([tmp_path / "big.txt"], progress=False)
    assert report.results == [] and "limit" in report.failures[0][1]
    assert counts(store) == (0, 0, 0)


def test_text_limit_catches_small_files_with_huge_text(tmp_path: Path, embedder) -> None:
    knowledge = KnowledgeConfig(max_text_chars=1_000)
    store = KnowledgeStore(Settings(home=tmp_path, knowledge=knowledge))
    with pytest.raises(BadInputError, match="characters of text"):
        store.ingest_bytes("long.md", b"a " * 600)
    assert counts(store) == (0, 0, 0)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\ana\\plan.md", "plan.md"),
        ("ｒｅｐｏｒｔ．ｍｄ", "report.md"),  # full-width forms fold to ASCII
        ("Café menu.md", "Café menu.md"),
        ("📄 notes.md", "📄 notes.md"),
        ("  notes.md ", "notes.md"),
        ("x" * 197 + ".md", "x" * 197 + ".md"),
    ],
)
def test_odd_names_are_reduced_to_safe_file_names(raw: str, clean: str) -> None:
    assert sanitize_name(raw) == clean


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("re\u200bport.md", "invisible"),  # zero-width space: would equal "report.md"
        ("invoice\u202etxt.md", "U\\+202E"),  # right-to-left override
        ("\u200b\u200e.md", "invisible"),  # nothing but invisible characters
        ("  .hidden.md", "start with '.'"),
        (".md", "only an extension"),
        ("...md", "only an extension"),
        ("__.md", "no letter"),
        ("x" * 300 + ".md", "303 characters; the limit is 200"),  # cut, two names would be one
    ],
)
def test_names_that_would_collide_are_refused_saying_why(raw: str, why: str) -> None:
    with pytest.raises(BadInputError, match=why):
        sanitize_name(raw)


def test_path_traversal_never_touches_the_filesystem(store: KnowledgeStore) -> None:
    document = store.ingest_bytes("../../outside/ｓｅｃｒｅｔ.txt", b"The secret is safe.").document
    assert document.name == "secret.txt"
    assert not (store.settings.home.parent / "outside").exists()


def test_html_in_a_declared_legacy_charset(store: KnowledgeStore) -> None:
    page = (
        '<!DOCTYPE html><html><head><meta charset="iso-8859-1"><title>Café menu</title></head>'
        "<body><p>Crème brûlée on Fridays.</p></body></html>"
    ).encode("latin-1")
    document = store.ingest_bytes("menu.html", page).document
    assert document.title == "Café menu"
    assert store.document_text(document.id) == "Crème brûlée on Fridays.\n"
