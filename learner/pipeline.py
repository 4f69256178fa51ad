"""The nightly cycle: select -> write evals -> evaluate -> mid-train -> distill -> evaluate ->
register -> promote -> notify.

The CLI (`protege train --now`), the scheduler and the demo all call `run_cycle(settings)`.
Every stage is recorded on the run's row; metrics go to `<home>/runs/<id>/metrics.jsonl` and the
resolved config to `<home>/runs/<id>/config.json`.

One cycle at a time: `run_cycle` first takes the database lease (learner/lease.py; CycleBusyError
when another process holds it), then cleans up after any cycle that died (learner/recovery.py).
`PROTEGE_TEST_PAUSE_AT=stage:<name>` (knowledge/faults.py) stops a cycle at a stage's start so
the crash tests can `kill -9` it there (tests/test_crash_cycle.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import httpx
from peft import LoraConfig, PeftModel, get_peft_model
from sqlmodel import Session

from knowledge.db import open_database
from knowledge.errors import NothingToTrainError
from knowledge.faults import pause_point
from knowledge.settings import Settings, dump_settings
from knowledge.store import KnowledgeStore
from knowledge.tables import utcnow
from learner import distill, midtrain
from learner.data_parallel import launch
from learner.datasets import training_prompts
from learner.doc_questions import (
    doc_question_prompts,
    earlier_questions,
    eval_questions,
    teacher_writer,
)
from learner.evals.answer_cache import base_answers
from learner.evals.evaluate import evaluate_cycle as _evaluate
from learner.evals.qa import normalize
from learner.evals.written import cycle_eval_sets
from learner.failures import describe_failure, require_gpu
from learner.gate import passes_gate
from learner.lease import CycleLease
from learner.memory import StagePeaks
from learner.modeling import (
    configure_threads,
    load_causal_lm,
    load_tokenizer,
    resolve_model_ref,
    torch_device,
)
from learner.plan import count_tokens, select_documents, work_tokens
from learner.qa_pairs import background_pairs, document_pairs
from learner.recovery import recover_after_crash
from learner.registry import BASE, Registry
from learner.replay import replay_material
from learner.tables import Run
from learner.teachers.factory import check_teacher, cycle_teacher, general_teacher
from learner.teachers.previous import previous_adapter
from learner.vllm_sampler import opd_sampler
from learner.webhook import send_webhook

log = logging.getLogger("protege.pipeline")


@dataclass
class CycleResult:
    run_id: int
    status: str  # succeeded | skipped | failed
    message: str
    version: str | None = None
    promoted: bool = False
    before: dict = field(default_factory=dict)  # served model before the cycle
    base: dict = field(default_factory=dict)  # base model (no adapter)
    after: dict = field(default_factory=dict)  # the candidate
    seconds: dict = field(default_factory=dict)
    peak_rss_mb: dict = field(default_factory=dict)  # per stage
    gate: str = ""  # "passed" or why the candidate was refused


class _RunLog:
    """The run's row plus its metrics JSONL."""

    def __init__(self, settings: Settings, trigger: str, lease: CycleLease) -> None:
        self.engine = open_database(settings.db_url)
        self.lease = lease
        with Session(self.engine) as session:
            row = Run(trigger=trigger)
            session.add(row)
            session.commit()
            session.refresh(row)
        self.id = row.id
        self.dir = settings.runs_dir / f"{self.id:05d}"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.json").write_text(json.dumps(dump_settings(settings), indent=2))
        self._metrics = (self.dir / "metrics.jsonl").open("a")
        self.seconds: dict[str, float] = {}
        self.peaks = StagePeaks()  # peak resident MiB per stage
        self.summary: dict = {}  # metrics_json while the run goes (timings so far, data)

    def metric(self, record: dict) -> None:
        self._metrics.write(json.dumps({"time": time.time(), **record}) + "\n")
        self._metrics.flush()

    def update(self, **fields: object) -> None:
        with Session(self.engine) as session:
            row = session.get(Run, self.id)
            for key, value in fields.items():
                setattr(row, key, value)
            session.add(row)
            session.commit()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Record the stage on the run's row and its duration in `self.seconds`."""
        self.lease.check()  # never start a stage after losing the lease to another cycle
        self.update(stage=name)
        log.info("run %s: stage %s", self.id, name)
        pause_point(f"stage:{name}")
        start = time.perf_counter()
        with self.peaks.stage(name):
            yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        # timings on the row as they happen, so `protege runs show` has them for failed runs too
        self.update(metrics_json=json.dumps(self.progress()))

    def progress(self) -> dict:
        return {**self.summary, "seconds": self.seconds, "peak_rss_mb": self.peaks.mb}

    def close(self) -> None:
        self._metrics.close()


def notify_serving(settings: Settings) -> str:
    """Tell the running server to swap now; it also polls the registry, so failure only delays.

    A server with API keys wants an admin key: `PROTEGE_API_KEY` in the environment (not in the
    config, which is saved next to every run and adapter).
    """
    key = os.environ.get("PROTEGE_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(
            f"{settings.server_url}/admin/adapters/reload", headers=headers, timeout=120
        )
        return f"server answered {response.status_code}: {response.text[:200]}"
    except httpx.HTTPError as exc:
        return (
            f"server not reached ({exc.__class__.__name__}); it will pick the adapter up by polling"
        )


def run_cycle(
    settings: Settings, trigger: str = "manual", progress: bool = True, notify: bool = True
) -> CycleResult:
    """Run one training cycle now. Never raises for "nothing new": returns status "skipped".

    Raises CycleBusyError (no run row is written) when another cycle holds the lease.
    """
    configure_threads(settings)
    registry = Registry(settings)
    with CycleLease(registry.engine, settings.schedule.lease_seconds) as lease:
        recovered = recover_after_crash(registry)
        run = _RunLog(settings, trigger, lease)
        if recovered:
            run.metric({"stage": "recovery", "done": recovered})
        try:
            return _cycle(settings, registry, run, progress, notify)
        finally:  # succeeded, skipped or failed: the run row says which
            send_webhook(settings.schedule.webhook_url, registry.engine, run.id)


def _cycle(
    settings: Settings, registry: Registry, run: _RunLog, progress: bool, notify: bool
) -> CycleResult:
    try:
        require_gpu(settings)  # a GPU profile on a host without one: refuse before any work
        with run.stage("select"):
            store = KnowledgeStore(settings)
            pick = select_documents(settings, registry, store)  # learner/plan.py
            served, rebuild, start = pick.served, pick.rebuild, pick.start
            new_docs, earlier_docs = pick.new, pick.earlier
            if not new_docs:
                raise NothingToTrainError(
                    "no new company documents since the served adapter; nothing to train"
                )
            lineage = pick.lineage
            documents = [store.document_text(d.id) for d in new_docs]
            student_path = resolve_model_ref(settings, settings.models.student)
            device = torch_device(settings)
            tokenizer = load_tokenizer(student_path)
            check_teacher(settings, tokenizer)  # an unusable teacher fails here, not after hours
            model = _trainable_student(settings, registry, start, student_path, device)
            tokens = sum(count_tokens(tokenizer, documents))
            run.summary = {"document_tokens": tokens, "work_tokens": work_tokens(settings, tokens)}
            if rebuild:
                run.summary["rebuild"] = rebuild
            run.metric(
                {
                    "stage": "select",
                    "new_documents": [d.id for d in new_docs],
                    "earlier_documents": [d.id for d in earlier_docs],
                    "served": served,
                    "rebuild": rebuild,
                }
            )

        prompts = training_prompts(settings)  # from the sources learner.sources allows
        run.summary["sources"] = {"documents": len(new_docs), **prompts.sources}
        run.metric({"stage": "sources", **run.summary["sources"]})

        # The teacher (by default the model before mid-training, frozen: the served adapter, or
        # the base on a rebuild) writes the eval items and the QA pairs of documents without any
        # and scores OPD: open from here through distillation.
        with ExitStack() as stack:
            served_dir = None if served == BASE else registry.verify(served)
            start_dir = None if start == BASE else served_dir
            teacher = stack.enter_context(
                cycle_teacher(settings, model, tokenizer, device, start, start_dir)
            )
            write = teacher_writer(teacher, model, tokenizer, settings.learner.eval.max_new_tokens)
            with run.stage("write_evals"):
                sets = cycle_eval_sets(
                    settings, store, registry.engine, new_docs + earlier_docs, pick.fresh,
                    write, prompts, run.dir, run.id,
                )  # fmt: skip
                exclude = eval_questions(sets)
                opd_prompts = [p for p in prompts.opd if normalize(p[-1]["content"]) not in exclude]
                run.metric({"stage": "write_evals", "new_sets": sorted(sets.new_sets)})

            with run.stage("evaluate_before"):
                # the raw base's answers are kept between nights (only new prompts generated)
                cache = base_answers(settings, student_path, device)
                fresh = cache if start == BASE else None  # the trained adapter is still zero
                before = _evaluate(settings, model, tokenizer, sets, progress, store, fresh)
                if start == BASE:
                    base = before
                    if served_dir is not None:  # a rebuild: the gate compares with the served
                        with previous_adapter(model, served_dir, served) as served_model:
                            with served_model.active():
                                before = _evaluate(
                                    settings, model, tokenizer, sets, progress, store
                                )
                else:
                    with model.disable_adapter():
                        base = _evaluate(settings, model, tokenizer, sets, progress, store, cache)
                cache.save()
                run.metric({"stage": "evaluate_before", "served": before, "base": base})

            ranks = settings.learner.distributed.processes  # learner/data_parallel.py when > 1
            with run.stage("midtrain"):
                pairs = document_pairs(settings, store, new_docs + earlier_docs, exclude, write)
                new_pairs = [p for d in new_docs for p in pairs[d.id]]
                earlier_pairs = [p for d in earlier_docs for p in pairs[d.id]]
                replay_documents, replay_pairs = replay_material(
                    settings.learner.midtrain,
                    registry.documents_by_night(served) if earlier_docs else [],
                    {d.id: store.document_text(d.id) for d in earlier_docs},
                    pairs,
                    prompts.documents,
                    background_pairs(settings, prompts.documents, exclude, write)
                    if settings.learner.midtrain.background_pairs
                    else [],
                )
                mid_inputs = {
                    "documents": documents,
                    "chat_prompts": prompts.chat,
                    "qa_pairs": new_pairs,
                    "replay_documents": replay_documents,
                    "replay_pairs": replay_pairs,
                }
                if ranks > 1:
                    mid = launch(
                        settings, "midtrain", model, mid_inputs, run.dir / "ranks", run.metric
                    )
                else:
                    mid = midtrain.main(
                        model, tokenizer, cfg=settings.learner.midtrain, seed=settings.learner.seed,
                        log=run.metric, progress=progress, **mid_inputs,
                    )  # fmt: skip

            with run.stage("distill"):
                opd_inputs = {
                    "prompts": opd_prompts,
                    "doc_prompts": doc_question_prompts(settings, store, new_pairs),
                    "earlier_prompts": earlier_questions(settings, earlier_pairs),
                    "replay_pairs": replay_pairs,
                    # the pairs mid-training learned, twins included: plain pairs alone in
                    # OPD's cross-entropy would wash the formatted twins back out
                    "qa_pairs": midtrain.with_twins(
                        new_pairs, settings.learner.midtrain, settings.learner.seed
                    )
                    if settings.learner.midtrain.qa_pairs
                    else [],
                }
                if ranks > 1:  # each rank opens the same teacher (start, start_dir)
                    opd = launch(
                        settings, "distill", model, opd_inputs, run.dir / "ranks", run.metric,
                        start, start_dir,
                    )  # fmt: skip
                else:
                    with opd_sampler(settings, model, tokenizer, run.dir) as sampler:
                        opd = distill.main(
                            model, tokenizer, teacher, cfg=settings.learner.distill,
                            seed=settings.learner.seed, sampler=sampler, log=run.metric,
                            progress=progress, **opd_inputs,
                            general_teacher=general_teacher(settings, model, teacher),
                        )  # fmt: skip

        with run.stage("evaluate"):
            after = _evaluate(settings, model, tokenizer, sets, progress, store)
            ok, why = passes_gate(settings, before, base, after, sets.new_sets)
            run.metric({"stage": "evaluate", "candidate": after, "gate": why})

        with run.stage("register"):
            version = registry.next_version()
            metrics = {**after, "gate": why, "before": before, "base": base, **mid, **opd}
            registry.register(
                version,
                save=model.save_pretrained,
                parent_version=None if start == BASE else start,
                base_model=student_path,
                config=dump_settings(settings),
                documents=lineage,
                metrics=metrics,
                run_id=run.id,
            )

        with run.stage("promote"):
            if ok:
                registry.promote(version, actor=f"run:{run.id}")
            else:
                registry.reject(version)
        message = f"{version} {'promoted' if ok else 'rejected'} ({why})"
        if ok and notify:
            with run.stage("notify"):
                message += "; " + notify_serving(settings)
        run.update(
            status="succeeded",
            stage="done",
            message=message,
            adapter_version=version,
            metrics_json=json.dumps({**metrics, **run.progress()}),
            finished_at=utcnow(),
        )
        return CycleResult(
            run.id, "succeeded", message, version, ok, before, base, after, run.seconds,
            run.peaks.mb, why,
        )  # fmt: skip
    except NothingToTrainError as exc:
        run.update(status="skipped", message=str(exc), finished_at=utcnow())
        return CycleResult(run.id, "skipped", str(exc))
    except Exception as exc:
        run.update(status="failed", message=describe_failure(exc, settings), finished_at=utcnow())
        raise
    finally:
        run.close()


def _trainable_student(settings: Settings, registry: Registry, served: str, path: str, device):  # noqa: ANN001, ANN202
    """The student with a trainable adapter: the served one continued, or a fresh LoRA."""
    base_model = load_causal_lm(path, device, settings.models.dtype)
    if served != BASE:
        return PeftModel.from_pretrained(
            base_model, str(registry.verify(served)), is_trainable=True
        )
    lora = settings.learner.lora
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base_model, config)
