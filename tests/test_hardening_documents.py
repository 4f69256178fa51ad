"""Issue 11, items 5 and 6: superseded versions keep their own access; names never collide.

    .venv/bin/python -m pytest tests/test_hardening_documents.py -q

Against a real `protege serve` process (tests/serve_process.py) with API keys: a `groups` version
replaced by a `company` version stays invisible to outsiders in listings and details (title,
sha256, groups: nothing of it in the answers); file names that would turn into the same stored
name, or into nothing, are refused saying why; the answer shows the stored name; the same bytes
with other access settings are refused with 409 instead of silently keeping the old access.
"""

from __future__ import annotations

import httpx
import pytest
from serve_process import protege_serve

from assistant.auth import create_key
from knowledge.db import open_database

SECRET_PLAN = b"# Reorganisation plan\n\nThe Lisbon office closes in March; staff move to Porto.\n"
PUBLIC_PLAN = b"# Office plan\n\nBoth offices stay open this year.\n"


@pytest.fixture(scope="module")
def server(sandbox_test, tmp_path_factory):
    with protege_serve(tmp_path_factory.mktemp("documents"), sandbox_test.student_dir) as running:
        db = open_database(running.db_url)
        running.keys = {
            "admin": create_key(db, "ana", role="admin").secret,
            "hr": create_key(db, "hella", role="user", groups=["hr"]).secret,
            "outsider": create_key(db, "otto", role="user", groups=["sales"]).secret,
        }
        yield running


def client(server, who: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.keys[who]}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=120)


def upload(server, name: str, data: bytes, **form: str) -> httpx.Response:
    with client(server, "admin") as http:
        return http.post("/v1/documents", files={"file": (name, data)}, data=form)


def test_a_superseded_groups_version_stays_hidden_from_outsiders(server) -> None:
    v1 = upload(server, "plan.md", SECRET_PLAN, visibility="groups", groups="hr")
    assert v1.status_code == 201, v1.text
    v2 = upload(server, "plan.md", PUBLIC_PLAN, visibility="company")
    assert v2.status_code == 201 and v2.json()["replaced_id"] == v1.json()["id"]
    old, new = v1.json(), v2.json()

    with client(server, "outsider") as http:
        listing = http.get("/v1/documents")
        detail = http.get(f"/v1/documents/{new['id']}")
        by_old_id = http.get(f"/v1/documents/{old['id']}")
    [plan] = [d for d in listing.json()["data"] if d["name"] == "plan.md"]
    assert [v["version"] for v in plan["versions"]] == [2] and plan["n_versions"] == 1
    assert [v["version"] for v in detail.json()["versions"]] == [2]
    for answer in (listing.text, detail.text):  # nothing of the old version anywhere
        assert old["sha256"] not in answer and "Reorganisation" not in answer
        assert '"hr"' not in answer
    assert by_old_id.status_code == 404  # the same answer as an id that does not exist

    for who in ("hr", "admin"):  # who may see the old version still sees both
        with client(server, who) as http:
            versions = http.get(f"/v1/documents/{old['id']}").json()["versions"]
        assert [(v["version"], v["visibility"]) for v in versions] == [
            (2, "company"),
            (1, "groups"),
        ]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (".md", "only an extension"),
        ("...md", "only an extension"),
        ("\u202e\u200b.md", "invisible, control or bidi characters (U+200B, U+202E)"),
        ("\u200b\u200c\u200d", "invisible"),
        ("re\u200bport.md", "invisible"),  # would have become "report.md"
        ("__.md", "no letter, digit or symbol"),
        ("x" * 301 + ".md", "304 characters; the limit is 200"),
    ],
)
def test_names_that_would_collide_or_say_nothing_are_refused(server, name: str, why: str) -> None:
    refused = upload(server, name, f"# Note\n\nA note named {name[:10]!r}.\n".encode())
    assert refused.status_code == 400 and why in refused.json()["error"]["message"], refused.text


def test_distinct_names_stay_distinct_and_the_answer_shows_the_stored_name(server) -> None:
    names = ["a" * 190 + "-1.md", "a" * 190 + "-2.md"]  # long, the same but for the end
    ids = []
    for i, name in enumerate(names):
        stored = upload(server, name, f"# Long {i}\n\nLong name number {i}.\n".encode())
        assert stored.status_code == 201 and stored.json()["name"] == name
        assert stored.json()["version"] == 1
        ids.append(stored.json()["id"])
    assert ids[0] != ids[1]
    folded = upload(server, "ｒｅｐｏｒｔ．ｍｄ", b"# Report\n\nFull-width name.\n")
    assert folded.status_code == 201, folded.text
    assert folded.json()["stored_name"] == folded.json()["name"] == "report.md"
    assert folded.json()["uploaded_name"] == "ｒｅｐｏｒｔ．ｍｄ"
    with client(server, "admin") as http:
        listed = {d["name"] for d in http.get("/v1/documents").json()["data"]}
    assert set(names) | {"report.md"} <= listed


def test_the_same_bytes_with_other_access_are_refused_not_silently_kept(server) -> None:
    data = b"# Salary bands\n\nEngineering level 3 earns between 70,000 and 85,000 euros.\n"
    first = upload(server, "bands.md", data, visibility="groups", groups="hr")
    assert first.status_code == 201
    wider = upload(server, "bands.md", data, visibility="company")
    assert wider.status_code == 409 and wider.json()["error"]["type"] == "AccessConflictError"
    message = wider.json()["error"]["message"]
    assert f"document {first.json()['id']}" in message and "asks for company" in message
    other = upload(server, "copy-of-bands.md", data, visibility="groups", groups="hr,sales")
    assert other.status_code == 409
    # the same access, or none given: the stored document, unchanged (200)
    for form in ({"visibility": "groups", "groups": "hr"}, {}):
        same = upload(server, "bands.md", data, **form)
        assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
        assert same.json()["visibility"] == "groups" and same.json()["groups"] == ["hr"]
    with client(server, "outsider") as http:
        hits = http.post("/v1/search", json={"query": "salary of engineering level 3"}).json()
    assert all(h["name"] != "bands.md" for h in hits["data"])  # still hidden from sales
