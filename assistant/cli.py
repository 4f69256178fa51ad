"""The `protege` command line.

    protege sandbox build --size demo        # build (or reuse) the offline sandbox
    protege serve [--host H] [--port P]      # API + engine (default: serving.host:port)
    protege ingest docs/                     # add documents (folders recurse)
    protege upload big.md                    # through the server; large files: a job, a bar
    protege documents list|show ID|delete ID --yes
    protege forget ID --yes                  # delete a document, taint adapters trained on it
    protege knowledge check [--repair]       # SQL vs vector index drift
    protege train --now [--dry-run]          # one nightly cycle now (or only what it would do)
    protege runs list|show ID                # training cycles: stage timings, metrics, message
    protege evals list [--document ID]|show ID  # the gate's questions written from the documents
    protege eval --qa Q.jsonl --ifeval I.jsonl --adapter current --json
    protege adapters list|promote V|rollback
    protege keys create NAME --role user|admin [--groups a,b] | list | revoke ID|PREFIX
    protege conversations export [--out FILE] [--since DATE]
    protege schedule                         # run cycles on the configured cron
    protege demo                             # the whole loop on the sandbox

Global: `--config PROFILE` (a name in configs/ or a YAML path; default $PROTEGE_CONFIG or sandbox)
and `-v`, before or after the verb. `protege serve --host H --port P` overrides the profile's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from knowledge.errors import ConfigError, CycleBusyError, ProtegeError
from knowledge.settings import Settings, load_settings


def _sandbox_build(settings: Settings, args: argparse.Namespace) -> int:
    from learner.sandbox.build import build_sandbox

    size = args.size or settings.sandbox.size
    seed = settings.sandbox.seed if args.seed is None else args.seed
    manifest = build_sandbox(
        settings.sandbox_dir,
        size,
        seed,
        teacher=args.teacher,
        force=args.force,
        rebuild_teacher=args.rebuild_teacher,
        progress=not args.json,
    )
    if args.json:
        print(manifest.model_dump_json(indent=2))
    else:
        print(f"sandbox {size} (seed {seed}) ready at {manifest.root}")
        print(f"  student: {manifest.student_dir}")
        print(f"  teacher: {manifest.teacher_dir or '(not built; --teacher builds it)'}")
        for day in manifest.days:
            print(
                f"  {day.name}: {day.documents_dir}  qa={day.qa_file.name}  ifeval={day.ifeval_file.name}"
            )
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from assistant.server import serve

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.model_copy(
            update={"serving": settings.serving.model_copy(update=overrides)}
        )
    serve(settings)
    return 0


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from learner.pipeline import run_cycle

    if not args.now:
        print(
            "nothing to do: `protege train --now` runs a cycle now; `protege schedule` runs them nightly"
        )
        return 2
    if args.processes is not None:  # validated as the profile's value would be
        learner = settings.learner.model_dump()
        learner["distributed"] = {"processes": args.processes}
        try:
            learner_config = type(settings.learner).model_validate(learner)
        except ValueError as exc:
            raise ConfigError(f"--processes {args.processes}: {exc}") from None
        settings = settings.model_copy(update={"learner": learner_config})
    if args.dry_run:
        from assistant.cli_runs import dry_run

        return dry_run(settings, args.json)
    try:
        result = run_cycle(settings, trigger="manual", notify=not args.no_notify)
    except CycleBusyError:
        raise  # no run was written; main() says another cycle is running
    except Exception as exc:  # the run's row (`protege runs show`) holds the same message
        from learner.failures import describe_failure

        message = describe_failure(exc, settings)
        print(f"protege: error: training failed: {message}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "run": result.run_id,
                "status": result.status,
                "message": result.message,
                "version": result.version,
                "promoted": result.promoted,
                "before": result.before,
                "after": result.after,
                "seconds": result.seconds,
            },
            indent=2,
        )
    )
    return 0 if result.status in {"succeeded", "skipped"} else 1


def _open_book_passages(settings: Settings):  # noqa: ANN202
    """Retrieval for open-book QA (company documents, as serving grounds); None: nothing ingested."""
    from knowledge.store import KnowledgeStore

    store = KnowledgeStore(settings)
    if not store.list_documents():
        return None
    return lambda question: [hit.text for hit in store.retrieve(question)]


def _eval(settings: Settings, args: argparse.Namespace) -> int:
    import tempfile

    from learner.loading import load_student

    model, tokenizer, version = load_student(settings, args.adapter)
    with tempfile.TemporaryDirectory(prefix="protege-eval-") as tmp:
        scores = _scores(settings, args, model, tokenizer, Path(tmp))
    scores["adapter"] = version
    if args.json:
        print(json.dumps(scores))
    else:
        for key, value in scores.items():
            print(f"{key:>24}: {value}")
    return 0


def _scores(settings: Settings, args: argparse.Namespace, model, tokenizer, workdir: Path) -> dict:  # noqa: ANN001
    from knowledge.store import KnowledgeStore
    from learner.datasets import EvalSets, eval_sets
    from learner.evals.evaluate import evaluate_model

    if args.qa or args.ifeval:
        sets = EvalSets(args.qa, args.ifeval, None)
    else:  # the sets the nightly gate scores: every ingested document's QA, IFEval, known QA
        names = [d.name for d in KnowledgeStore(settings).list_documents()]
        sets = eval_sets(settings, names, workdir)
    return evaluate_model(
        model,
        tokenizer,
        qa_file=sets.qa_file,
        ifeval_file=sets.ifeval_file,
        known_qa_file=sets.known_qa_file,
        incontext_qa_file=None if args.qa or args.ifeval else sets.incontext_qa_file,
        cloze_file=sets.cloze_file,
        passages_for=_open_book_passages(settings) if sets.qa_file else None,
        max_new_tokens=settings.learner.eval.max_new_tokens,
        batch_size=settings.learner.eval.batch_size,
        limit=args.limit,
        progress=not args.json,
    )


def _adapters(settings: Settings, args: argparse.Namespace) -> int:
    from learner.registry import Registry

    registry = Registry(settings)
    before = registry.served_version()
    if args.action == "promote":
        registry.promote(args.version, actor="cli")
        print(f"promoted {args.version}")
    elif args.action == "rollback":
        print(f"rolled back; now serving {registry.rollback(actor='cli')}")
    served = registry.served_version()
    if served != before:  # the notified server swaps now; other replicas at their next poll
        from learner.pipeline import notify_serving

        print(notify_serving(settings))
    print(f"{'version':8} {'status':9} {'qa':>6} {'ifeval':>7} {'parent':8} created")
    for row in registry.list():
        m = json.loads(row.metrics_json)
        mark = " *" if row.version == served else ""
        print(
            f"{row.version:8} {row.status:9} {m.get('qa_closed_book', float('nan')):6.3f} "
            f"{m.get('ifeval_strict', float('nan')):7.3f} {row.parent_version or '-':8} "
            f"{row.created_at:%Y-%m-%d %H:%M}{mark}"
        )
    print(f"served: {served}")
    return 0


def _schedule(settings: Settings, args: argparse.Namespace) -> int:
    from learner.scheduler import build_scheduler

    scheduler = build_scheduler(settings, blocking=True)
    print(
        f"protege scheduler: cron {settings.schedule.cron!r} ({settings.schedule.timezone}); Ctrl-C stops"
    )
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from assistant.demo import run_demo

    return run_demo(settings, keep_serving=not args.no_wait)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protege", description="A company assistant that keeps learning."
    )
    parser.add_argument("--config", help="profile name in configs/ or a YAML path")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    sandbox = sub.add_parser("sandbox", help="the offline sandbox company and models")
    sandbox_sub = sandbox.add_subparsers(dest="action", required=True)
    build = sandbox_sub.add_parser("build", help="build (or reuse) the sandbox")
    build.add_argument("--size", choices=["test", "demo"])
    build.add_argument("--seed", type=int)
    build.add_argument("--teacher", action="store_true", help="also build the larger teacher")
    build.add_argument("--force", action="store_true", help="rebuild even if built")
    build.add_argument(
        "--rebuild-teacher",
        action="store_true",
        help="retrain only the teacher (keeps the student)",
    )
    build.add_argument("--json", action="store_true", help="print the manifest as JSON")
    build.set_defaults(func=_sandbox_build)

    serve = sub.add_parser("serve", help="start the API server")
    serve.add_argument("--host", help="address to bind (default: the profile's serving.host)")
    serve.add_argument(
        "--port", type=_port, help="port to listen on (default: the profile's serving.port)"
    )
    serve.set_defaults(func=_serve)

    from assistant.cli_documents import add_commands

    add_commands(sub)  # ingest, documents list|show|delete, forget, knowledge check [--repair]

    from assistant.cli_upload import add_commands as add_upload_commands

    add_upload_commands(sub)  # upload (through the server)

    train = sub.add_parser("train", help="run a training cycle")
    train.add_argument("--now", action="store_true", help="run one cycle now")
    train.add_argument("--no-notify", action="store_true", help="do not notify the running server")
    train.add_argument(
        "--dry-run", action="store_true", help="show what would be trained on; do not train"
    )
    train.add_argument("--json", action="store_true", help="--dry-run: print the plan as JSON")
    train.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="train on N data-parallel processes (learner.distributed.processes)",
    )
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate the student with an adapter")
    ev.add_argument(
        "--qa", type=Path, help="closed-book QA JSONL (default: the sets the gate scores)"
    )
    ev.add_argument("--ifeval", type=Path, help="IFEval JSONL (default: the gate's)")
    ev.add_argument("--adapter", default="current", help="base | current | VERSION")
    ev.add_argument("--limit", type=int)
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=_eval)

    from assistant.cli_runs import add_commands as add_runs_commands

    add_runs_commands(sub)  # runs list|show

    from assistant.cli_evals import add_commands as add_evals_commands

    add_evals_commands(sub)  # evals list|show

    from assistant.cli_keys import add_commands as add_keys_commands

    add_keys_commands(sub)  # keys create|list|revoke, conversations export

    adapters = sub.add_parser("adapters", help="the adapter registry")
    adapters_sub = adapters.add_subparsers(dest="action", required=True)
    adapters_sub.add_parser("list").set_defaults(func=_adapters)
    promote = adapters_sub.add_parser("promote")
    promote.add_argument("version")
    promote.set_defaults(func=_adapters)
    adapters_sub.add_parser("rollback").set_defaults(func=_adapters)

    sub.add_parser("schedule", help="run cycles on the configured cron").set_defaults(
        func=_schedule
    )

    demo = sub.add_parser("demo", help="the whole loop on the sandbox")
    demo.add_argument("--no-wait", action="store_true", help="stop the server when done")
    demo.set_defaults(func=_demo)
    _accept_global_options(parser)
    return parser


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {port}")
    return port


def _accept_global_options(parser: argparse.ArgumentParser) -> None:
    """Let `--config` and `-v` follow any verb too (`protege serve --config qwen3`): every
    subcommand gets them with a suppressed default, so one given before the verb is kept."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in action.choices.values():
            child.add_argument(
                "--config", default=argparse.SUPPRESS, help="profile name or YAML path"
            )
            child.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
            _accept_global_options(child)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(args.config)
        from knowledge.db import private_dirs

        private_dirs(settings)  # owner-only data folders, whichever command creates them first
        return args.func(settings, args)
    except ProtegeError as exc:
        print(f"protege: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
