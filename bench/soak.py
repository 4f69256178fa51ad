"""Soak bench: 16 clients of mixed load against a real `protege serve`, killed -9 mid-upload.

    .venv/bin/python bench/soak.py                       # test sandbox, 150 s, kill at 60%
    .venv/bin/python bench/soak.py --seconds 300 --clients 16 --kill-at 0.5

One server process on loopback (`protege --config <tmp>/soak.yaml serve`, API keys, the test
sandbox's student). 16 client threads run back to back for `--seconds`: chat streaming (6),
search (4), uploads (3: small ones answered at once, every third one large enough to be an
ingest job that the client follows to its end), deletes of documents uploaded earlier (1) and
admin reads (2: documents, runs, adapters, metrics). At `--kill-at` of the time, once an upload
job is running, the server is killed with SIGKILL and started again; clients keep going (what
fails while it is down counts as "unavailable", not as 5xx).

Printed: requests, 5xx count (goal 0), transport errors outside the downtime, p50/p95 latency per
route, peak resident memory of the server's process tree (parse workers included), uploads
acknowledged (201/200, or a job that succeeded) and how many of them are missing at the end (goal
0), jobs failed by the restart (the client is told: not lost), and `protege knowledge check`
after the server stopped. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import yaml

from assistant.auth import create_key
from knowledge.db import open_database
from learner.sandbox.build import build_sandbox

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = ["Where do visitors park?", "Who approves travel?", "When is lunch served?",
             "How many vacation days do I get?", "What does desk 4 handle?"]  # fmt: skip


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.home = work / "home"
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: list[str] = []  # transport errors while the server was meant to be up
        self.unavailable = 0  # failures while it was down (killed, restarting)
        self.acked: dict[int, str] = {}  # document id -> name, acknowledged as stored
        self.deleted: set[int] = set()
        self.jobs_failed_by_restart = 0
        self.jobs_running = 0
        self.down = threading.Event()
        self.stop = threading.Event()
        self.peak_rss = 0.0
        self.proc: subprocess.Popen | None = None

    # -- the server ------------------------------------------------------------------------------
    def configure(self, student: Path) -> None:
        with socket_port() as port:
            self.url = f"http://127.0.0.1:{port}"
        config = {
            "home": str(self.home),
            "models": {"student": str(student), "torch_threads": 1},
            "serving": {"host": "127.0.0.1", "port": port, "max_new_tokens": 16,
                        "registry_poll_seconds": 3600},
            "knowledge": {"chunk_tokens": 48, "chunk_overlap": 8, "job_threshold_bytes": 40_000},
        }  # fmt: skip
        self.config = self.work / "soak.yaml"
        self.config.write_text(yaml.safe_dump(config))

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROTEGE_")}
        log = (self.work / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "--config", str(self.config), "serve"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready; see {self.work / 'serve.log'}")

    def rss_watch(self) -> None:
        while not self.stop.is_set():
            if self.proc is not None and self.proc.poll() is None:
                self.peak_rss = max(self.peak_rss, tree_rss_mb(self.proc.pid))
            time.sleep(0.5)

    # -- requests --------------------------------------------------------------------------------
    def call(
        self, http: httpx.Client, route: str, method: str, path: str, **kw
    ) -> httpx.Response | None:  # noqa: ANN003, E501
        started = time.perf_counter()
        try:
            if kw.pop("stream", False):
                with http.stream(method, path, **kw) as response:
                    for _ in response.iter_lines():
                        pass
            else:
                response = http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            with self.lock:
                down = self.down.is_set()
                if down:
                    self.unavailable += 1
                else:
                    self.errors.append(f"{route}: {type(exc).__name__}: {exc}"[:200])
            if down:
                time.sleep(0.5)  # a client retrying a dead server, not a busy loop
            return None
        with self.lock:
            self.latency[route].append(time.perf_counter() - started)
            self.status[route][response.status_code] += 1
        return response

    def chat(self, http: httpx.Client, rng: random.Random) -> None:
        body = {"messages": [{"role": "user", "content": rng.choice(QUESTIONS)}], "stream": True}
        self.call(http, "chat (stream)", "POST", "/v1/chat/completions", json=body, stream=True)

    def search(self, http: httpx.Client, rng: random.Random) -> None:
        self.call(http, "search", "POST", "/v1/search", json={"query": rng.choice(QUESTIONS)})

    def upload(self, http: httpx.Client, rng: random.Random, n: int, worker: int) -> None:
        large = n % 3 == 2
        name = f"w{worker}-{n}-{rng.randrange(10**9)}.md"
        rules = 1_000 if large else 12  # large: ~70 kB, over job_threshold_bytes (40 kB)
        text = f"# Notes {name}\n\n" + "\n\n".join(
            f"Rule {i} of {name}: desk {rng.randrange(40)} answers within {i % 5 + 1} days."
            for i in range(rules)
        )
        response = self.call(http, "upload", "POST", "/v1/documents",
                             files={"file": (name, text.encode())})  # fmt: skip
        if response is None:
            return
        if response.status_code in (200, 201):
            with self.lock:
                self.acked[response.json()["id"]] = name
        elif response.status_code == 202:
            self.follow(http, response.json(), name)

    def follow(self, http: httpx.Client, job: dict, name: str) -> None:
        with self.lock:
            self.jobs_running += 1
        deadline = time.monotonic() + 600  # followed to its end, past the load's end too
        try:
            while time.monotonic() < deadline:
                response = self.call(http, "job status", "GET", job["status_url"])
                if response is not None and response.status_code == 200:
                    job = response.json()
                    if job["status"] == "succeeded":
                        with self.lock:
                            self.acked[job["document_id"]] = name
                        return
                    if job["status"] == "failed":
                        with self.lock:
                            self.jobs_failed_by_restart += "interrupted" in (job["error"] or "")
                        return
                time.sleep(0.5)
        finally:
            with self.lock:
                self.jobs_running -= 1

    def delete(self, http: httpx.Client, rng: random.Random) -> None:
        with self.lock:
            candidates = sorted(set(self.acked) - self.deleted)
            enough = len(self.deleted) < len(self.acked) / 3  # most uploads stay to be checked
        if len(candidates) < 4 or not enough:
            time.sleep(0.5)
            return
        doc_id = rng.choice(candidates[:-2])  # not the newest: leave some to check at the end
        response = self.call(http, "delete", "DELETE", f"/v1/documents/{doc_id}")
        if response is not None and response.status_code == 200:
            with self.lock:
                self.deleted.add(doc_id)
        time.sleep(1)

    def admin_read(self, http: httpx.Client, rng: random.Random) -> None:
        route, path = rng.choice([("documents", "/v1/documents"), ("admin runs", "/admin/runs"),
                                  ("admin adapters", "/admin/adapters"), ("metrics", "/metrics")])  # fmt: skip
        self.call(http, route, "GET", path)
        time.sleep(0.2)

    def client(self, kind: str, key: str, worker: int) -> None:
        rng = random.Random(worker)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=120) as http:
            n = 0
            while not self.stop.is_set():
                if kind == "upload":
                    self.upload(http, rng, n, worker)
                else:
                    getattr(self, kind)(http, rng)
                n += 1

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict:
        args = self.args
        db = open_database(f"sqlite:///{self.home / 'protege.db'}")
        admin = create_key(db, "soak-admin", role="admin").secret
        users = [create_key(db, f"soak-user{i}", role="user").secret for i in range(4)]
        plan = ["chat"] * 6 + ["search"] * 4 + ["upload"] * 3 + ["delete"] + ["admin_read"] * 2
        plan = (plan * ((args.clients + len(plan) - 1) // len(plan)))[: args.clients]
        threads = [threading.Thread(target=self.rss_watch, daemon=True)]
        for i, kind in enumerate(plan):
            key = admin if kind in ("upload", "delete", "admin_read") else users[i % len(users)]
            threads.append(threading.Thread(target=self.client, args=(kind, key, i), daemon=True))
        for thread in threads:
            thread.start()
        started = time.monotonic()
        kill_at, killed_at, back_after = started + args.seconds * args.kill_at, None, None
        while time.monotonic() < started + args.seconds:
            if killed_at is None and time.monotonic() >= kill_at and self.jobs_running:
                self.down.set()
                killed_at = time.monotonic() - started
                os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its parse workers
                self.proc.wait()
                t = time.monotonic()
                self.start()
                back_after = time.monotonic() - t
                time.sleep(1)  # connections of the dead server fail a little longer
                self.down.clear()
            time.sleep(0.2)
        self.stop.set()
        for thread in threads[1:]:
            thread.join(600)  # uploaders follow their last job to its end
        listed = httpx.get(f"{self.url}/v1/documents", headers={"Authorization": f"Bearer {admin}"},
                           timeout=60).json()["data"]  # fmt: skip
        present = {v["id"] for d in listed for v in d["versions"]}
        lost = sorted(set(self.acked) - self.deleted - present)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        check = subprocess.run(
            [sys.executable, "-m", "assistant.cli", "--config", str(self.config), "knowledge",
             "check", "--json"], capture_output=True, text=True, cwd=REPO, timeout=600,
        )  # fmt: skip
        return {"killed_at_s": killed_at, "restart_s": back_after, "lost": lost,
                "check": json.loads(check.stdout) if check.stdout else check.stderr[-500:]}  # fmt: skip


class socket_port:  # noqa: N801 - a context manager named for what it yields
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children (parse workers), from /proc."""
    total = 0.0
    for task in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{task}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in found]


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def report(soak: Soak, outcome: dict, seconds: float) -> None:
    total = sum(sum(codes.values()) for codes in soak.status.values())
    five = sum(n for codes in soak.status.values() for code, n in codes.items() if code >= 500)
    print(f"\nsoak: {soak.args.clients} clients, {seconds:.0f} s, server killed -9 at "
          f"{outcome['killed_at_s'] or float('nan'):.0f} s (back after "
          f"{outcome['restart_s'] or float('nan'):.1f} s)")  # fmt: skip
    print(f"requests answered: {total:,}   5xx: {five}   transport errors while up: "
          f"{len(soak.errors)}   failed while down: {soak.unavailable}")  # fmt: skip
    print(f"{'route':16} {'n':>6} {'p50 ms':>8} {'p95 ms':>8}  statuses")
    for route in sorted(soak.latency):
        ms = [1000 * v for v in soak.latency[route]]
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(soak.status[route].items()))
        print(
            f"{route:16} {len(ms):>6} {percentile(ms, 50):>8.0f} {percentile(ms, 95):>8.0f}  {codes}"
        )
    print(f"peak RSS of the server tree: {soak.peak_rss:,.0f} MiB")
    print(f"uploads acknowledged: {len(soak.acked)} (deleted since: {len(soak.deleted)}); "
          f"lost: {len(outcome['lost'])} {outcome['lost'] or ''}")  # fmt: skip
    print(f"ingest jobs failed by the restart (the client was told): {soak.jobs_failed_by_restart}"
          f"; jobs unfinished at the end: {soak.jobs_running}")  # fmt: skip
    check = outcome["check"]
    if isinstance(check, dict):
        print(f"knowledge check: consistent={check['consistent']} chunks={check['n_chunks']} "
              f"vectors={check['n_vectors']} orphans={len(check['orphans'])} "
              f"missing={len(check['missing'])}")  # fmt: skip
    else:
        print(f"knowledge check failed: {check}")
    for error in soak.errors[:10]:
        print(f"  error: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kill-at", type=float, default=0.6, help="share of --seconds")
    args = parser.parse_args()
    cache = Path(os.environ.get("PROTEGE_TEST_CACHE") or REPO / ".protege" / "test-cache")
    student = build_sandbox(cache / "sandbox", "test", 0, progress=False).student_dir
    with tempfile.TemporaryDirectory(prefix="protege-soak-") as tmp:
        soak = Soak(args, Path(tmp))
        soak.configure(student)
        soak.start()
        started = time.monotonic()
        outcome = soak.run()
        report(soak, outcome, time.monotonic() - started)


if __name__ == "__main__":
    main()
