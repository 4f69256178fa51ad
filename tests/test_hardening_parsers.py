"""Issue 11, item 7: parser bombs are refused on time and never hold up a shutdown.

    .venv/bin/python -m pytest tests/test_hardening_parsers.py -q

Against real `protege serve` processes (tests/serve_process.py): HTML nested 100,000 divs deep
(over five minutes of parsing before the fix), a DOCX and a PDF outline nested too deep are
refused at once with 422 naming the limit; with the depth limit lifted, a parse running past
`knowledge.parse_timeout_seconds` is killed and refused with 422, and the next upload parses
fine; a SIGTERM while such a parse runs stops the server within seconds.
"""

from __future__ import annotations

import io
import signal
import threading
import time
import zipfile

import httpx
from knowledge_docgen import make_docx, make_pdf
from serve_process import protege_serve

from assistant.auth import create_key
from knowledge.db import open_database

NORMAL = b"# Canteen\n\nLunch is served from noon to two.\n"


def nested_html(depth: int) -> bytes:
    return b"<html><body>" + b"<div>" * depth + b"deep" + b"</div>" * depth + b"</body></html>"


def nested_docx(depth: int) -> bytes:
    """A real DOCX whose body XML nests `depth` content controls around one paragraph."""
    source = make_docx([("p", "placeholder")])
    ns = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    body = (b"<w:sdt><w:sdtContent>" * depth + b"<w:p><w:r><w:t>deep</w:t></w:r></w:p>"
            + b"</w:sdtContent></w:sdt>" * depth)  # fmt: skip
    xml = f"<w:document {ns}><w:body>".encode() + body + b"</w:body></w:document>"
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = xml if item.filename == "word/document.xml" else src.read(item.filename)
            dst.writestr(item, data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def nested_outline_pdf(depth: int) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=io.BytesIO(make_pdf([("Intro", "Some text on a page.")])))
    parent = None
    for level in range(depth):
        parent = writer.add_outline_item(title=f"Level {level}", page_number=0, parent=parent)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def admin_client(server) -> httpx.Client:
    key = create_key(open_database(server.db_url), "ana", role="admin").secret
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
                        timeout=300)  # fmt: skip


def upload(http: httpx.Client, name: str, data: bytes) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    answer = http.post("/v1/documents", files={"file": (name, data)})
    return answer, time.perf_counter() - started


def test_deep_nesting_is_refused_at_once_in_every_nested_format(sandbox_test, tmp_path) -> None:
    # job_threshold_bytes: answered in the request itself (large uploads become jobs: item 8)
    knobs = {"job_threshold_bytes": 10_000_000, "max_upload_bytes": 5_000_000}
    with protege_serve(tmp_path / "home", sandbox_test.student_dir, knowledge=knobs) as server:
        http = admin_client(server)
        for name, data, why in [
            ("deep.html", nested_html(100_000), "nests elements more than 256 levels deep"),
            ("deep10k.html", nested_html(10_000), "nests elements more than 256 levels deep"),
            ("deep.docx", nested_docx(200), "nests elements more than 256 levels deep"),
            ("deep.pdf", nested_outline_pdf(300), "PDF reader limit"),
        ]:
            refused, seconds = upload(http, name, data)
            assert refused.status_code == 422, (name, refused.text)
            assert refused.json()["error"]["type"] == "TooComplexError"
            assert why in refused.json()["error"]["message"], name
            assert seconds < 5, (name, seconds)  # was 22 s for 10,000 divs, > 5 min for 100,000
        fine, _ = upload(http, "shallow.html", nested_html(50))
        assert fine.status_code == 201 and fine.json()["n_chunks"] == 1
        assert http.get("/v1/documents").json()["data"][0]["name"] == "shallow.html"
        assert len(http.get("/v1/documents").json()["data"]) == 1  # nothing else was stored


def test_a_parse_past_its_time_is_killed_and_refused(sandbox_test, tmp_path) -> None:
    knobs = {"max_nesting_depth": 1_000_000, "parse_timeout_seconds": 1.5,
             "job_threshold_bytes": 10_000_000}  # fmt: skip
    with protege_serve(tmp_path / "home", sandbox_test.student_dir, knowledge=knobs) as server:
        http = admin_client(server)
        refused, seconds = upload(http, "slow.html", nested_html(20_000))  # ~40 s of parsing
        assert refused.status_code == 422, refused.text
        message = refused.json()["error"]["message"]
        assert "took longer than 1.5 s to parse" in message and "parse_timeout_seconds" in message
        assert seconds < 1.5 + 4
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        fine, _ = upload(http, "canteen.md", NORMAL)  # a fresh parser takes over
        assert fine.status_code == 201, fine.text


def test_a_running_parser_bomb_does_not_hold_up_a_shutdown(sandbox_test, tmp_path) -> None:
    knobs = {"max_nesting_depth": 1_000_000, "parse_timeout_seconds": 300,
             "job_threshold_bytes": 10_000_000}  # fmt: skip
    with protege_serve(tmp_path / "home", sandbox_test.student_dir, knowledge=knobs) as server:
        http = admin_client(server)
        answers: list[httpx.Response] = []
        bomb = threading.Thread(
            target=lambda: answers.append(upload(http, "bomb.html", nested_html(30_000))[0])
        )
        bomb.start()
        time.sleep(3)  # the parser is deep in the bomb by now (minutes of work)
        assert bomb.is_alive()
        started = time.monotonic()
        server.stop(signal.SIGTERM, timeout=60)
        stopped_after = time.monotonic() - started
        bomb.join(30)
    assert stopped_after < 8, stopped_after  # not the minutes the parse would take
    assert server.stopped_cleanly()
    assert answers and answers[0].status_code == 503  # told to come back, not left hanging
    assert "shutting down" in answers[0].json()["error"]["message"]
