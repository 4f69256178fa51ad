"""Bench: three nights in a row, each cycle exactly as the scheduler runs it (gate included).

    .venv/bin/python bench/continual.py --seeds 0,1,2 --png bench/results/continual.png

Per training seed: a fresh workspace (SQLite, Chroma, adapters) on the demo sandbox; night N
ingests day N's documents and calls `learner.pipeline.run_cycle` (the function `protege train
--now` and the scheduler call), with the profile's settings (`--set section.key=value` overrides
a learner setting, e.g. `--set distill.steps=60`). After each night it prints the served model's
figures as the cycle measured them: closed-book QA per day with the majority baseline (a constant
answer per question type) and the non-majority accuracy beside it, IFEval strict/loose, QA on
what the base knew before any document (day 0), in-context reading, open-book QA, interference
(share of wrong earlier answers that name a value only the night's documents introduced),
promoted or refused and why, stage seconds and peak memory. Then mean ± spread over seeds per
night, and a PNG of per-day QA over nights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from bench_common import mean_spread, settings_from_args

from knowledge.settings import Settings
from knowledge.store import KnowledgeStore
from learner.datasets import sandbox_manifest
from learner.pipeline import run_cycle
from learner.sandbox.build import build_sandbox

FIGURES = [  # (label, metrics key)
    ("IFEval strict", "ifeval_strict"),
    ("IFEval loose", "ifeval_loose"),
    ("day-0 QA (known)", "known_qa"),
    ("in-context QA", "incontext_qa"),
    ("open-book QA", "qa_open_book"),
    ("interference", "interference"),
]


def night_rows(settings: Settings, seed: int, nights: int, workdir: Path) -> list[dict]:
    """Run `nights` cycles on a fresh workspace; one row per night (what the cycle measured)."""
    local = settings.model_copy(deep=True)
    local.home, local.database_url = workdir, None
    local.sandbox.dir = settings.sandbox_dir
    local.learner.seed = seed
    manifest = sandbox_manifest(local)
    store = KnowledgeStore(local)
    rows, base = [], None
    for night in range(1, nights + 1):
        day = manifest.days[night - 1]
        store.ingest_paths(sorted(Path(day.documents_dir).glob("*.md")))
        t0 = time.perf_counter()
        result = run_cycle(local, trigger="bench", progress=False, notify=False)
        wall = time.perf_counter() - t0
        base = base or result.base
        served = result.after if result.promoted else result.before
        rows.append(
            {
                "seed": seed,
                "night": night,
                "status": result.status,
                "promoted": result.promoted,
                "gate": result.gate or result.message,
                "served": served,
                "candidate": result.after,
                "base": base,
                "seconds": result.seconds,
                "cycle_seconds": round(wall, 1),
                "peak_rss_mb": result.peak_rss_mb,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _day_keys(row: dict) -> list[str]:
    return sorted(k.removeprefix("n_qa_") for k in row["candidate"] if k.startswith("n_qa_day"))


def summary(rows: list[dict], nights: int) -> str:
    """Per night: the candidate's figures (mean ± spread over seeds) and the gate's verdicts."""
    days = _day_keys(rows[-1])
    base = rows[0]["base"]
    head = ["figure", "base"] + [f"night {n}" for n in range(1, nights + 1)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def line(label: str, key: str) -> None:
        cells = [label, f"{base.get(key, float('nan')):.1%}" if key in base else "-"]
        for n in range(1, nights + 1):
            values = [
                r["candidate"][key] for r in rows if r["night"] == n and key in r["candidate"]
            ]
            cells.append(mean_spread(values) if values else "-")
        lines.append("| " + " | ".join(cells) + " |")

    for day in days:
        line(f"QA {day}", f"qa_{day}")
        line(f"  {day} majority baseline", f"qa_{day}_majority")
        line(f"  {day} non-majority items", f"qa_{day}_nonmajority")
        line(f"  {day} cloze recall", f"cloze_{day}")
    for label, key in FIGURES:
        line(label, key)
    verdicts = ["promoted", "-"]
    for n in range(1, nights + 1):
        group = [r for r in rows if r["night"] == n]
        verdicts.append(f"{sum(r['promoted'] for r in group)}/{len(group)}")
    lines.append("| " + " | ".join(verdicts) + " |")
    for stat, key in (("cycle s", "cycle_seconds"),):
        cells = [stat, "-"]
        for n in range(1, nights + 1):
            cells.append(mean_spread([r[key] for r in rows if r["night"] == n], pct=False))
        lines.append("| " + " | ".join(cells) + " |")
    peaks = ["peak MiB", "-"]
    for n in range(1, nights + 1):
        peak = max(max(r["peak_rss_mb"].values(), default=0) for r in rows if r["night"] == n)
        peaks.append(f"{peak:,.0f}")
    lines.append("| " + " | ".join(peaks) + " |")
    refused = [
        f"seed {r['seed']} night {r['night']}: {r['gate']}" for r in rows if not r["promoted"]
    ]
    return "\n".join(lines + (["", "Refused:"] + refused if refused else []))


def plot(rows: list[dict], nights: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = list(range(0, nights + 1))
    keys = [("known_qa", "day 0 (known)")] + [(f"qa_{d}", d) for d in _day_keys(rows[-1])]
    for key, label in keys:
        means, lows, highs = [], [], []
        for n in xs:
            if n == 0:
                values = [rows[0]["base"].get(key, 0.0)]
            else:
                values = [r["served"].get(key, 0.0) for r in rows if r["night"] == n]
            means.append(statistics.fmean(values))
            lows.append(min(values))
            highs.append(max(values))
        ax.plot(xs, means, marker="o", label=label)
        ax.fill_between(xs, lows, highs, alpha=0.15)
    ax.set_xticks(xs, ["base"] + [f"night {n}" for n in xs[1:]])
    ax.set_ylabel("closed-book QA of the served model")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("What the served model knows, night after night")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def _workspace(keep: Path | None, seed: int) -> AbstractContextManager[str | Path]:
    """A throw-away workspace, or `keep/seed<N>` (emptied first) to inspect afterwards."""
    if keep is None:
        return tempfile.TemporaryDirectory()
    workdir = keep / f"seed{seed}"
    shutil.rmtree(workdir, ignore_errors=True)
    return nullcontext(workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sandbox")
    parser.add_argument("--size", default="demo")
    parser.add_argument("--sandbox-seed", type=int, default=None, help="world seed (profile's)")
    parser.add_argument("--sandbox-dir", type=Path, default=None, help="where sandboxes are built")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument("--nights", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write every row here")
    parser.add_argument("--png", type=Path, default=Path("bench/results/continual.png"))
    parser.add_argument("--set", action="append", default=[], help="e.g. distill.steps=60")
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep each seed's workspace (adapters, runs) here"
    )
    args = parser.parse_args()
    settings = settings_from_args(args.config, args.size, args.set)
    settings.models.torch_threads = args.threads
    if args.sandbox_seed is not None:
        settings.sandbox.seed = args.sandbox_seed
    if args.sandbox_dir is not None:
        settings.sandbox.dir = args.sandbox_dir
    build_sandbox(settings.sandbox_dir, settings.sandbox.size, settings.sandbox.seed)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with _workspace(args.keep, seed) as workdir:
            rows += night_rows(settings, seed, args.nights, Path(workdir))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\nSeeds {args.seeds}, sandbox seed {settings.sandbox.seed}; mean ± standard deviation")
    print("(candidate of each night; per-day QA is closed-book, no retrieval)\n")
    print(summary(rows, args.nights))
    plot(rows, args.nights, args.png)
    print(f"\nPNG: {args.png}")


if __name__ == "__main__":
    main()
