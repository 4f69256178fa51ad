"""Bench: what one nightly cycle costs as documents grow, and as nights accumulate.

    .venv/bin/python bench/cycle_scale.py --size demo --scales 1,4,16 --nights 3 --threads 2

Part 1 (new documents): on a fresh workspace, night 1 with the day-1 documents times 1, 4 and
16: the originals plus copies that each carry one extra line (so every copy is a document of its
own, with its own chunks, QA pairs and written eval items; sandbox copies are not sandbox
documents, so the teacher writes their pairs and items as for a company's). Part 2 (nights): one
workspace, night N ingests day N's documents; replay (earlier documents and pairs, capped by
`midtrain.replay_max_tokens`) and the eval sets grow with N. Each row: seconds and peak resident
memory per stage (the cycle's own timings, learner.pipeline.CycleResult). Ends with the
seconds-per-document slope of part 1 (least squares over the scales) and night N's total against
night 1's.

Uses the profile's recipe (`--set section.key=value` overrides a learner setting, as in
bench/continual.py). The cycle should grow linearly in new documents and stay bounded in N.
A refused night leaves the base served, so the next night trains on every document so far:
to measure accumulation on a sandbox whose candidates the gate refuses, open the gate
(`--set gate.ifeval_margin=1 --set gate.known_qa_drop=1 ...`, as the tests do); the
`promoted` column says which it was.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from bench_common import settings_from_args

from knowledge.settings import Settings
from knowledge.store import KnowledgeStore
from learner.datasets import sandbox_manifest
from learner.pipeline import run_cycle
from learner.sandbox.build import build_sandbox

STAGES = ("select", "write_evals", "evaluate_before", "midtrain", "distill", "evaluate")


def workspace(settings: Settings, root: Path) -> Settings:
    local = settings.model_copy(deep=True)
    local.home, local.database_url = root, None
    local.sandbox.dir = settings.sandbox_dir
    return local


def copies(day_dir: Path, times: int, out: Path) -> list[Path]:
    """The day's documents and `times - 1` altered copies of each, as files under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for source in sorted(day_dir.glob("*.md")):
        text = source.read_text()
        for i in range(times):
            target = out / (source.name if i == 0 else f"{source.stem}-copy{i}.md")
            target.write_text(text if i == 0 else f"{text}\n\nCopy {i} of {source.stem}.\n")
            files.append(target)
    return files


def cycle_row(label: str, documents: int, settings: Settings) -> dict:
    result = run_cycle(settings, trigger="bench", progress=False, notify=False)
    if result.status != "succeeded":
        raise SystemExit(f"{label}: cycle {result.status}: {result.message}")
    row = {"label": label, "documents": documents, "seconds": result.seconds,
           "peak_mb": result.peak_rss_mb, "total": sum(result.seconds.values()),
           "qa_items": int(result.after.get("n_qa", 0)), "promoted": result.promoted}  # fmt: skip
    stages = ", ".join(f"{s} {result.seconds.get(s, 0.0):.0f}" for s in STAGES)
    print(f"{label}: {row['total']:.0f} s ({documents} documents; {stages})", flush=True)
    return row


def scale_rows(settings: Settings, scales: list[int], tmp: Path) -> list[dict]:
    day = sandbox_manifest(settings).days[0]
    rows = []
    for k in scales:
        local = workspace(settings, tmp / f"scale{k}")
        files = copies(day.documents_dir, k, tmp / f"docs{k}")
        KnowledgeStore(local).ingest_paths(files)
        rows.append(cycle_row(f"{k}x day 1", len(files), local))
    return rows


def night_rows(settings: Settings, nights: int, tmp: Path) -> list[dict]:
    local = workspace(settings, tmp / "nights")
    manifest, store, rows = sandbox_manifest(local), KnowledgeStore(local), []
    for night in range(1, nights + 1):
        files = sorted(manifest.days[night - 1].documents_dir.glob("*.md"))
        store.ingest_paths(files)
        rows.append(cycle_row(f"night {night}", len(files), local))
    return rows


def slope(rows: list[dict]) -> tuple[float, float]:
    """Least-squares (seconds per document, intercept) of total seconds on documents."""
    xs, ys = [r["documents"] for r in rows], [r["total"] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return b, my - b * mx


def print_table(rows: list[dict]) -> None:
    print(
        "\n| run | docs | "
        + " | ".join(f"{s} s" for s in STAGES)
        + " | total s | peak MB | QA items | promoted |"
    )
    print("|---" * (len(STAGES) + 6) + "|")
    for r in rows:
        cells = [f"{r['seconds'].get(s, 0.0):.1f}" for s in STAGES]
        peak = max(r["peak_mb"].values()) if r["peak_mb"] else 0.0
        print(f"| {r['label']} | {r['documents']} | " + " | ".join(cells)
              + f" | {r['total']:.1f} | {peak:,.0f} | {r['qa_items']} | {r['promoted']} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sandbox")
    parser.add_argument("--size", default="demo", choices=["test", "demo"])
    parser.add_argument("--sandbox-dir", type=Path, help="where the sandbox is (or is built)")
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--nights", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = settings_from_args(args.config, args.size, args.set)
    settings.models.torch_threads = args.threads
    if args.sandbox_dir:
        settings.sandbox.dir = str(args.sandbox_dir)
    build_sandbox(settings.sandbox_dir, settings.sandbox.size, settings.sandbox.seed)
    tmp = Path(tempfile.mkdtemp(prefix="cycle-scale-"))
    try:
        scales = scale_rows(settings, [int(s) for s in args.scales.split(",")], tmp)
        nights = night_rows(settings, args.nights, tmp) if args.nights else []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(scales + nights)
    per_doc, fixed = slope(scales)
    print(f"\nnew documents: {per_doc:.1f} s per document + {fixed:.0f} s fixed (least squares)")
    if nights:
        print(
            f"night {len(nights)} / night 1 total: {nights[-1]['total'] / nights[0]['total']:.2f}"
        )


if __name__ == "__main__":
    main()
