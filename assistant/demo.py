"""`protege demo` (what `make demo` runs): the whole learning loop on the sandbox, offline.

1. build (or reuse) the sandbox; 2. start the assistant server (a separate process);
3. upload the day-1 documents; 4. ask three of their questions with retrieval on (grounded, with
citations) and off (closed-book: the base does not know them); 5. run one nightly cycle now
(mid-train, OPD, evaluate, gate, register, promote, notify); 6. the server hot-swaps; 7. ask the
same questions with retrieval off again; 8. print the before/after table and the server's URL.

Each demo gets a fresh workspace (database, index, adapters) under `<home>/demo/<time>/`, so it can
be run again; the sandbox itself is built once under `<home>/sandbox` and reused.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import yaml

from knowledge.errors import ProtegeError
from knowledge.settings import Settings, dump_settings
from learner.datasets import read_jsonl
from learner.evals.qa import majority_flags, qa_correct
from learner.pipeline import run_cycle
from learner.sandbox.build import build_sandbox


def _free_port(preferred: int) -> int:
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ProtegeError(f"the server exited with code {proc.returncode}; see its log")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ProtegeError(f"the server did not become ready within {timeout:.0f} s")


def _ask(client: httpx.Client, question: str, retrieval: bool = True) -> dict:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "protege",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 48,
            "temperature": 0,
            "retrieval": retrieval,  # protege's extension: False answers closed-book
        },
    )
    response.raise_for_status()
    body = response.json()
    return {
        "answer": body["choices"][0]["message"]["content"],
        "version": body.get("adapter_version", response.headers.get("x-protege-adapter-version")),
        "sources": [s.get("title") for s in body.get("sources", [])],
    }


def _print_answers(title: str, questions: list[dict], answers: list[dict]) -> int:
    """Print each answer with whether it holds the expected one; returns how many do."""
    print(f"\n--- {title} ---")
    right = 0
    for q, a in zip(questions, answers, strict=True):
        ok = qa_correct(a["answer"], q["answer"])
        right += ok
        sources = f"  sources: {a['sources']}" if a["sources"] else ""
        print(
            f"Q: {q['question']}\n   expected: {q['answer']}\n   [{a['version']}] {a['answer']!r}"
            f"  {'RIGHT' if ok else 'wrong'}{sources}"
        )
    print(f"{right} of {len(questions)} right")
    return right


TABLE = [
    ("closed-book QA, day-1 docs", "qa_closed_book"),
    ("  majority baseline", "qa_majority"),
    ("  non-majority items", "qa_nonmajority"),
    ("IFEval strict", "ifeval_strict"),
    ("IFEval loose", "ifeval_loose"),
    ("QA on known entities", "known_qa"),
    ("open-book QA (retrieval)", "qa_open_book"),
    ("in-context reading", "incontext_qa"),
]


def _table(before: dict, after: dict) -> str:
    lines = [
        f"| {'metric':28} | {'before (base)':>13} | {'after (adapter)':>15} |",
        f"|{'-' * 30}|{'-' * 15}|{'-' * 17}|",
    ]
    for label, key in TABLE:
        if key in before or key in after:
            lines.append(
                f"| {label:28} | {before.get(key, float('nan')):13.1%} | {after.get(key, float('nan')):15.1%} |"
            )
    return "\n".join(lines)


def run_demo(settings: Settings, keep_serving: bool = True, n_questions: int = 3) -> int:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    print(f"[demo] data directory: {settings.home}")
    manifest = build_sandbox(settings.sandbox_dir, settings.sandbox.size, settings.sandbox.seed)
    timings["sandbox"] = time.perf_counter() - started

    workspace = settings.home / "demo" / datetime.now().strftime("%Y%m%d-%H%M%S")
    workspace.mkdir(parents=True)
    port = _free_port(settings.serving.port)
    demo_settings = settings.model_copy(deep=True, update={"home": workspace, "database_url": None})
    demo_settings.sandbox.dir = settings.sandbox_dir
    demo_settings.serving.port = port
    # The demo is one command on this machine: open mode (no API keys), which only loopback allows.
    demo_settings.serving.host, demo_settings.serving.auth = "127.0.0.1", "open"
    demo_settings.serving.reload_url = None
    config_path = workspace / "config.yaml"
    config_path.write_text(yaml.safe_dump(dump_settings(demo_settings)))
    demo_settings.profile = str(config_path)
    url = f"http://127.0.0.1:{port}"

    log_path = workspace / "server.log"
    print(f"[demo] starting the assistant at {url} in open mode: no API keys, loopback only "
          f"(log: {log_path})")  # fmt: skip
    env = {**os.environ, "PROTEGE_HOME": str(workspace)}
    env.pop("PROTEGE_DATABASE_URL", None)
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "--config", str(config_path), "serve"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        t0 = time.perf_counter()
        _wait_ready(url, server)
        timings["server start"] = time.perf_counter() - t0
        day = manifest.days[0]
        client = httpx.Client(base_url=url, timeout=300)
        t0 = time.perf_counter()
        files = sorted(day.documents_dir.glob("*.md"))
        for path in files:
            client.post(
                "/v1/documents", files={"file": (path.name, path.read_bytes(), "text/markdown")}
            ).raise_for_status()
        timings["ingest"] = time.perf_counter() - t0
        print(f"[demo] uploaded {len(files)} {day.name} documents")

        questions = _demo_questions(read_jsonl(day.qa_file), n_questions)
        first = [_ask(client, q["question"]) for q in questions]
        _print_answers(
            "before the nightly cycle, retrieval on (grounded answers)", questions, first
        )
        closed = [_ask(client, q["question"], retrieval=False) for q in questions]
        _print_answers("before the nightly cycle, retrieval off (closed-book)", questions, closed)

        print("\n[demo] running one nightly cycle now: mid-train -> distill -> evaluate -> promote")
        t0 = time.perf_counter()
        result = run_cycle(demo_settings, trigger="demo")
        timings["nightly cycle"] = time.perf_counter() - t0
        print(f"[demo] cycle: {result.status}: {result.message}")

        t0 = time.perf_counter()

        def closed_book() -> list[dict]:
            return [_ask(client, q["question"], retrieval=False) for q in questions]

        answers = closed_book()
        while (
            result.promoted
            and answers[-1]["version"] != result.version
            and time.perf_counter() - t0 < 60
        ):
            time.sleep(1)  # the server swaps on notify (or on its next registry poll)
            answers = closed_book()
        timings["swap + answers"] = time.perf_counter() - t0
        title = (
            f"after the cycle and the hot-swap to {result.version}, retrieval off (closed-book)"
            if result.promoted
            else "after the cycle (the gate refused the candidate: the served model is unchanged), "
            "retrieval off"
        )
        _print_answers(title, questions, answers)

        print(
            "\nBefore/after on the sandbox (closed-book: no retrieval; IFEval: held-out prompts)\n"
        )
        print(_table(result.before, result.after))
        timings["total"] = time.perf_counter() - started
        print("\nTimings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        print(f"Stage seconds: {json.dumps(result.seconds)}")
        if keep_serving:
            print(f"\nThe assistant is running at {url}  (adapter {answers[-1]['version']})")
            print(f"Try: curl -s {url}/v1/models ; press Ctrl-C to stop it.")
            server.wait()
        else:
            print(
                f"\nThe assistant ran at {url} (adapter {answers[-1]['version']}); stopped (--no-wait)."
            )
        return 0 if result.status == "succeeded" else 1
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


def _demo_questions(rows: list[dict], n: int) -> list[dict]:
    """`n` questions of different kinds (team, city, project, ...), none with the majority answer
    of its kind: the demo shows knowledge, not a lucky constant."""
    flags = majority_flags(rows)
    picked, kinds = [], set()
    for row, majority in zip(rows, flags, strict=True):
        if not majority and row.get("group") not in kinds:
            picked.append(row)
            kinds.add(row.get("group"))
        if len(picked) == n:
            break
    return picked or rows[:n]


def demo_workspace_root(settings: Settings) -> Path:
    return settings.home / "demo"
