"""`protege upload`: send files to the running server, following large uploads' jobs with a bar.

    PROTEGE_API_KEY=prt_... protege upload handbook.md policies/ --visibility groups --groups hr
    protege upload big.md --url http://127.0.0.1:8321 --no-wait    # print the job and return

Unlike `protege ingest` (which writes the database and index itself, for a stopped server or a
first load), this goes through `POST /v1/documents` like any client: an upload over
`knowledge.job_threshold_bytes` is answered 202 with a status URL, which is polled with a
progress bar (stage, chunks embedded) until the job ends. The key comes from `PROTEGE_API_KEY`
(an admin key; none needed in open mode), the server from `--url` or `serving.reload_url` /
host:port. Exit code 0 when every file was stored, 1 when one was refused or failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from knowledge.parsing import collect_files
from knowledge.settings import Settings


def _follow(http: httpx.Client, job: dict[str, Any], name: str, quiet: bool) -> dict[str, Any]:
    """Poll a job until it ends, drawing a bar of its progress; the final job."""
    with tqdm(total=100, desc=name[-30:], unit="%", disable=quiet, leave=True) as bar:
        while job["status"] in ("queued", "running"):
            time.sleep(0.5)
            job = http.get(job["status_url"]).raise_for_status().json()
            bar.n = round(100 * job["progress"])
            if job["total"] > 1:
                bar.set_postfix_str(f"{job['stage']} {job['done']:,}/{job['total']:,}")
            else:
                bar.set_postfix_str(job["stage"])
            bar.refresh()
        if job["status"] == "succeeded":
            bar.n = 100
            bar.refresh()
    return job


def upload(settings: Settings, args: argparse.Namespace) -> int:
    key = os.environ.get("PROTEGE_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    form = {k: v for k, v in (("visibility", args.visibility), ("groups", args.groups)) if v}
    failed = 0
    with httpx.Client(
        base_url=args.url or settings.server_url, headers=headers, timeout=600
    ) as http:
        for path in collect_files([Path(p) for p in args.paths]):
            response = http.post(
                "/v1/documents", files={"file": (path.name, path.read_bytes())}, data=form
            )
            body = response.json() if response.headers.get("content-type", "").startswith(
                "application/json") else {}  # fmt: skip
            if response.status_code == 202 and not args.no_wait:
                body = _follow(http, body, path.name, args.quiet)
                if body["status"] != "succeeded":
                    failed += 1
                    print(f"  failed: {path}: {body['error']}", file=sys.stderr)
                    continue
                print(f"{path}: document {body['document_id']} (job {body['id']})")
            elif response.status_code == 202:
                print(f"{path}: queued as job {body['id']}: {body['status_url']}")
            elif response.status_code in (200, 201):
                known = "" if body.get("created") else " (already stored)"
                print(
                    f"{path}: document {body['id']} v{body['version']} as {body['name']!r}{known}"
                )
            else:
                failed += 1
                message = (body.get("error") or {}).get("message") or response.text[:200]
                print(f"  failed: {path}: HTTP {response.status_code}: {message}", file=sys.stderr)
    return 1 if failed else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `upload` on the CLI's subparsers."""
    up = sub.add_parser("upload", help="upload files through the running server (jobs: a bar)")
    up.add_argument("paths", nargs="+")
    up.add_argument("--url", help="the server (default serving.reload_url or host:port)")
    up.add_argument("--visibility", choices=["company", "groups"])
    up.add_argument("--groups", help="comma-separated groups (with --visibility groups)")
    up.add_argument("--no-wait", action="store_true", help="print a large upload's job, return")
    up.add_argument("--quiet", action="store_true", help="no progress bar")
    up.set_defaults(func=upload)
