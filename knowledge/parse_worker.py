"""Parse uploads in child processes with a deadline, so a parser bomb costs a bounded time.

    parsed = parse_isolated("page.html", data, limits, timeout=30.0)   # ParsedDocument
    shutdown_workers()                                                  # kill every child now

A worker is `python -m knowledge.parse_worker`: it imports the parsers once (~0.5 s) and then
parses one file at a time, read from stdin, answering on stdout. The caller waits at most
`timeout` seconds (`knowledge.parse_timeout_seconds`); past that it kills the worker (SIGKILL: a
parser stuck in C code never sees anything gentler) and raises TooComplexError (422). The next
parse starts a fresh worker. `shutdown_workers()` (the server's shutdown, and atexit) kills them
all, so a parse in progress never holds up a shutdown: its caller gets ShuttingDownError (503)
at once; a later parse simply starts a new worker.

Messages are length-prefixed JSON (the file's bytes raw after their header), never pickle: a
worker reads hostile input, and what it sends back must not be able to run code in the caller.
Errors come back as (type name, message) and are raised again as the same `knowledge.errors`
class. Each worker caps its own address space (`_MEMORY_BYTES`) and dies with its parent (Linux
PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from typing import IO, Any

from knowledge import errors
from knowledge.errors import ProtegeError, ShuttingDownError, TooComplexError
from knowledge.formats import Limits, Span

_HEADER = struct.Struct(">I")
_MEMORY_BYTES = 2 << 30  # a parse needs ~100 MB; a decompression bomb is stopped at 2 GiB
_MAX_IDLE = 2  # idle workers kept for the next parse

_idle: list[subprocess.Popen[bytes]] = []
_busy: set[subprocess.Popen[bytes]] = set()
_lock = threading.Lock()
_closed = False


# ---- caller side ---------------------------------------------------------------------------------
def parse_isolated(name: str, data: bytes, limits: Limits, timeout: float) -> Any:
    """`knowledge.parsing.parse_document` in a worker process, within `timeout` seconds."""
    from knowledge.parsing import ParsedDocument

    worker = _acquire()
    ok = False
    try:
        header = json.dumps({"name": name, "limits": asdict(limits), "size": len(data)}).encode()
        try:
            _write_frame(worker.stdin, header, data)
            reply = _read_frame(worker.stdout, time.monotonic() + timeout)
        except TimeoutError:
            raise TooComplexError(
                f"{name!r} took longer than {timeout:g} s to parse "
                "(knowledge.parse_timeout_seconds); refused as a possible parser bomb"
            ) from None
        except (OSError, EOFError) as exc:
            raise ShuttingDownError(
                f"the parser of {name!r} stopped ({'shutting down' if _closed else exc}); "
                "upload it again"
            ) from exc
        ok = True
    finally:
        _release(worker, healthy=ok)
    answer = json.loads(reply)
    if "error" in answer:
        kind = getattr(errors, answer["error"]["type"], ProtegeError)
        if not (isinstance(kind, type) and issubclass(kind, ProtegeError)):
            kind = ProtegeError
        raise kind(answer["error"]["message"])
    doc = answer["ok"]
    spans = [Span(**span) for span in doc.pop("spans")]
    return ParsedDocument(**doc, spans=spans)


def shutdown_workers() -> None:
    """Kill every worker, busy ones included (their callers get ShuttingDownError, 503)."""
    global _closed
    with _lock:
        _closed = True
        workers = [*_idle, *_busy]
        _idle.clear()
    for worker in workers:
        _kill(worker)


def _acquire() -> subprocess.Popen[bytes]:
    global _closed
    with _lock:
        _closed = False  # a parse after shutdown_workers (the next app in this process) is fine
        while _idle:
            worker = _idle.pop()
            if worker.poll() is None:
                _busy.add(worker)
                return worker
        worker = subprocess.Popen(
            [sys.executable, "-m", "knowledge.parse_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            close_fds=True,
        )  # fmt: skip
        _busy.add(worker)
        return worker


def _release(worker: subprocess.Popen[bytes], *, healthy: bool) -> None:
    with _lock:
        _busy.discard(worker)
        keep = healthy and not _closed and len(_idle) < _MAX_IDLE and worker.poll() is None
        if keep:
            _idle.append(worker)
    if not keep:
        _kill(worker)


def _kill(worker: subprocess.Popen[bytes]) -> None:
    try:
        worker.kill()
    except OSError:
        pass
    worker.wait()
    for stream in (worker.stdin, worker.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


atexit.register(shutdown_workers)


# ---- framing -------------------------------------------------------------------------------------
def _write_frame(stream: IO[bytes] | None, header: bytes, payload: bytes = b"") -> None:
    assert stream is not None
    stream.write(_HEADER.pack(len(header)) + header)
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_frame(stream: IO[bytes] | None, deadline: float | None = None) -> bytes:
    """One length-prefixed message (the header frame; an empty payload frame follows)."""
    assert stream is not None
    fd = stream.fileno()
    size = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))[0]
    body = _read_exact(fd, size, deadline)
    _read_exact(fd, _HEADER.size, deadline)  # the (empty) payload frame of a reply
    return body


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    parts, left = [], n
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            # poll, not select: select() refuses descriptors past 1023 (a busy process has them)
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            if wait <= 0 or not poller.poll(wait * 1000):
                raise TimeoutError
        part = os.read(fd, min(left, 1 << 20))
        if not part:
            raise EOFError("the parser process ended")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


# ---- worker side ---------------------------------------------------------------------------------
def _limit_self() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_BYTES, _MEMORY_BYTES))
    try:  # die with the parent (Linux), even when it is killed -9 mid-parse
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve() -> None:
    from knowledge.parsing import parse_document

    _limit_self()
    fd_in, out = sys.stdin.buffer.fileno(), sys.stdout.buffer
    while True:
        try:
            header = json.loads(
                _read_exact(fd_in, _HEADER.unpack(_read_exact(fd_in, 4, None))[0], None)
            )
            data = _read_exact(fd_in, _HEADER.unpack(_read_exact(fd_in, 4, None))[0], None)
        except EOFError:
            return  # the caller closed the pipe (or died)
        try:
            parsed = parse_document(header["name"], data, Limits(**header["limits"]))
            answer: dict[str, Any] = {"ok": asdict(parsed)}
        except ProtegeError as exc:
            answer = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        except MemoryError:
            answer = {"error": {"type": "TooComplexError",
                                "message": f"{header['name']!r} needs too much memory to parse"}}  # fmt: skip
        except RecursionError:
            answer = {"error": {"type": "TooComplexError",
                                "message": f"{header['name']!r} nests too deeply to parse"}}  # fmt: skip
        except Exception as exc:  # a parser bug on odd input: the upload is refused, not a 500
            answer = {"error": {"type": "CorruptDocumentError",
                                "message": f"{header['name']!r} cannot be read: {type(exc).__name__}: {exc}"}}  # fmt: skip
        _write_frame(out, json.dumps(answer, ensure_ascii=True).encode())


if __name__ == "__main__":
    _serve()
