"""`protege ingest`, `protege documents ...`, `protege knowledge check` as a user runs them.

    .venv/bin/python -m pytest tests/test_knowledge_cli.py -q

One real subprocess (ingest of a folder tree, with its progress bar); the rest call the CLI's
`main()` in this process, which is the same code without paying the imports again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from knowledge_docgen import HTML_PAGE, make_docx, make_pdf

from assistant.cli import main


@pytest.fixture
def profile(sandbox_test, tmp_path: Path) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "home": str(tmp_path / "home"),
                "sandbox": {
                    "size": sandbox_test.size,
                    "seed": sandbox_test.seed,
                    "dir": str(sandbox_test.root.parent),
                },
                "knowledge": {"chunk_tokens": 48, "chunk_overlap": 8},
            }
        )
    )
    return path


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "hr" / "deep").mkdir(parents=True)
    (root / "vacation.md").write_text("# Vacation\n\nEveryone gets 27 vacation days a year.\n")
    (root / "hr" / "guide.docx").write_bytes(make_docx([("h1", "Guide"), ("p", "Badges at 9.")]))
    (root / "hr" / "deep" / "travel.pdf").write_bytes(make_pdf([("Trains", "Take the train.")]))
    (root / "hr" / "deep" / "security.html").write_bytes(HTML_PAGE)
    (root / "hr" / "people.csv").write_text("name,team\nAna,HR\n")
    (root / "hr" / "broken.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)))
    (root / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # unsupported: not picked up
    return root


def run(profile: Path, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(profile), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ingest_a_folder_tree_then_list_show_delete_check(
    profile: Path, docs: Path, capsys: pytest.CaptureFixture
) -> None:
    ingest = subprocess.run(
        [sys.executable, "-m", "assistant.cli", "--config", str(profile), "ingest", str(docs),
         "--visibility", "groups", "--groups", "hr", "--user", "ana"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ingest.returncode == 1, ingest.stderr  # one broken file among them
    assert "ingested 5 document(s): 5 new" in ingest.stdout and "1 failed" in ingest.stdout
    assert "broken.pdf" in ingest.stderr and "not a readable PDF" in ingest.stderr
    assert "ingest: 100%" in ingest.stderr and "6/6" in ingest.stderr  # the progress bar

    code, out, _ = run(profile, capsys, "documents", "list", "--json")
    listed = {d["name"]: d for d in json.loads(out)}
    assert code == 0 and set(listed) == {
        "vacation.md", "guide.docx", "travel.pdf", "security.html", "people.csv"
    }  # fmt: skip
    assert all(d["groups"] == ["hr"] and d["uploaded_by"] == "ana" for d in listed.values())
    code, table, _ = run(profile, capsys, "documents", "list")
    assert code == 0 and "travel.pdf" in table and "5 document(s)" in table

    (docs / "vacation.md").write_text("# Vacation\n\nEveryone gets 30 vacation days a year.\n")
    code, out, _ = run(profile, capsys, "ingest", str(docs / "vacation.md"), "--quiet")
    assert code == 0 and "1 new (1 as new versions)" in out
    vacation = listed["vacation.md"]["id"]
    code, out, _ = run(profile, capsys, "documents", "show", str(vacation))
    assert code == 0 and "v2" in out and "v1" in out and "superseded" in out
    assert "company" not in out  # without --visibility, the new version kept groups hr

    code, out, _ = run(profile, capsys, "documents", "delete", str(vacation))
    assert code == 1 and "--yes" in out
    code, out, _ = run(profile, capsys, "documents", "delete", str(vacation), "--yes")
    assert code == 0 and "deleted 'vacation.md'" in out
    code, _, err = run(profile, capsys, "documents", "show", str(vacation))
    assert code == 2 and "no document" in err

    code, out, _ = run(profile, capsys, "knowledge", "check")
    assert code == 0 and "0 orphan vectors, 0 missing vectors" in out
