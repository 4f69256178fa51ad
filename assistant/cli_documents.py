"""`protege ingest`, `protege documents list|show|delete`, `protege knowledge check [--repair]`.

    protege ingest docs/ --visibility groups --groups hr,finance   # folders recurse; progress bar
    protege documents list [--json]
    protege documents show 7 [--json]          # every version, its size, chunks, adapters
    protege documents delete 7 --yes           # forget every version of document 7
    protege forget 7 --yes                     # the same: taints adapters trained on it
    protege knowledge check [--repair] [--rebuild] [--json]   # --repair also rebuilds a broken index
    protege upload big.md --visibility company               # through the server (assistant/cli_upload.py)

Exit codes: 0 fine; 1 some files failed to ingest, or `check` found drift (and did not repair);
2 errors (bad arguments, unknown ids) as everywhere in the CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from knowledge.settings import Settings


def _store(settings: Settings, student_tokens: bool = False):  # noqa: ANN202
    from knowledge.store import KnowledgeStore

    if not student_tokens:
        return KnowledgeStore(settings)
    # Chunks are sized in the student's tokens, as the server sizes them.
    from learner.modeling import load_tokenizer, resolve_model_ref

    tokenizer = load_tokenizer(resolve_model_ref(settings, settings.models.student))
    return KnowledgeStore(
        settings, count_tokens=lambda s: len(tokenizer.encode(s, add_special_tokens=False))
    )


def ingest(settings: Settings, args: argparse.Namespace) -> int:
    store = _store(settings, student_tokens=True)
    report = store.ingest_files(
        [Path(p) for p in args.paths],
        uploaded_by=args.user,
        visibility=args.visibility,
        groups=args.groups,
        progress=not args.quiet,
    )
    new = sum(r.created for r in report.results)
    versions = sum(1 for r in report.results if r.replaced is not None)
    print(
        f"ingested {len(report.results)} document(s): {new} new ({versions} as new versions), "
        f"{len(report.results) - new} already known, {len(report.failures)} failed"
    )
    for path, why in report.failures:
        print(f"  failed: {path}: {why}", file=sys.stderr)
    return 1 if report.failures else 0


def documents(settings: Settings, args: argparse.Namespace) -> int:
    from knowledge.catalog import catalog, describe

    store = _store(settings)
    if args.action == "list":
        infos = catalog(store)
        if args.json:
            print(json.dumps([i.as_dict() for i in infos], indent=2))
            return 0
        print(f"{'id':>5} {'ver':>3} {'size':>9} {'chunks':>6} {'access':14} {'uploaded':16} "
              f"{'by':10} {'adapters':12} name")  # fmt: skip
        for info in infos:
            c = info.current
            access = "company" if c.visibility == "company" else ",".join(c.groups)
            print(
                f"{c.id:>5} {c.version:>3} {c.size_bytes:>9,} {c.n_chunks:>6} {access[:14]:14} "
                f"{c.created_at:%Y-%m-%d %H:%M} {(c.uploaded_by or '-')[:10]:10} "
                f"{','.join(c.adapters) or '-':12} {info.name}"
            )
        print(f"{len(infos)} document(s)")
        return 0
    if args.action == "show":
        info = describe(store, args.id)
        if args.json:
            print(json.dumps(info.as_dict(), indent=2))
            return 0
        print(f"{info.name}: {info.current.title} (current: id {info.id}, v{info.current.version})")
        for v in info.versions:
            access = "company" if v.visibility == "company" else "groups " + ",".join(v.groups)
            print(
                f"  v{v.version} id {v.id} {v.status:10} {v.size_bytes:,} bytes, "
                f"{v.n_chunks} chunks, {v.media_type}, {access}, uploaded "
                f"{v.created_at:%Y-%m-%d %H:%M} by {v.uploaded_by or '-'}; "
                f"adapters: {', '.join(v.adapters) or 'none'}"
            )
        return 0
    return forget(settings, args)  # delete


def forget(settings: Settings, args: argparse.Namespace) -> int:
    """Delete every version, taint the adapters trained on it, move serving off them."""
    from knowledge.catalog import describe
    from learner.forgetting import forget_document
    from learner.pipeline import notify_serving

    store = _store(settings)
    info = describe(store, args.id)
    adapters = sorted({a for v in info.versions for a in v.adapters})
    if not args.yes:
        print(
            f"would forget {info.name!r} ({len(info.versions)} version(s)) and taint the adapters "
            f"trained on it ({', '.join(adapters) or 'none'}); add --yes to do it"
        )
        return 1
    result = forget_document(settings, args.id, actor=args.user, store=store)
    print(f"deleted {info.name!r}: {result.summary()}")
    if result.served != result.served_before:
        print(notify_serving(settings))
    return 0


def knowledge_check(settings: Settings, args: argparse.Namespace) -> int:
    from knowledge.consistency import check_index

    report = check_index(_store(settings), repair=args.repair, rebuild=args.rebuild)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        if report.broken:
            print(f"the vector index is broken: {report.broken}")
        if report.rebuilt:
            print(f"rebuilt the vector index from SQL: {len(report.missing)} chunks embedded")
            return 0
        if report.broken:
            return 1
        print(
            f"{report.n_chunks} chunk rows, {report.n_vectors} vectors: "
            f"{len(report.orphans)} orphan vectors, {len(report.missing)} missing vectors"
            + (" (repaired)" if report.repaired else "")
        )
        for vector_id in report.orphans[:20]:
            print(f"  orphan: {vector_id}")
        for chunk_id in report.missing[:20]:
            print(f"  missing: {chunk_id}")
    return 0 if report.consistent or report.repaired else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `ingest`, `documents` and `knowledge` on the CLI's subparsers."""
    ingest_p = sub.add_parser("ingest", help="add documents (files or folders, recursively)")
    ingest_p.add_argument("paths", nargs="+")
    ingest_p.add_argument("--user", default="cli", help="recorded as the uploader")
    ingest_p.add_argument(
        "--visibility",
        choices=["company", "groups"],
        help="default: a new version keeps its previous access; a new document is company-wide",
    )
    ingest_p.add_argument("--groups", help="comma-separated groups (with --visibility groups)")
    ingest_p.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest_p.set_defaults(func=ingest)

    docs = sub.add_parser("documents", help="list, show or delete stored documents")
    docs_sub = docs.add_subparsers(dest="action", required=True)
    listing = docs_sub.add_parser("list")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=documents)
    show = docs_sub.add_parser("show")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=documents)
    remove = docs_sub.add_parser("delete", help="forget every version of a document")
    remove.add_argument("id", type=int)
    remove.add_argument("--yes", action="store_true", help="really delete")
    remove.add_argument("--user", default="cli", help="recorded as who deleted it")
    remove.set_defaults(func=documents)

    forget_p = sub.add_parser(
        "forget", help="delete a document and taint every adapter trained on it"
    )
    forget_p.add_argument("id", type=int, help="any version's id")
    forget_p.add_argument("--yes", action="store_true", help="really forget")
    forget_p.add_argument("--user", default="cli", help="recorded as who deleted it")
    forget_p.set_defaults(func=forget)

    knowledge = sub.add_parser("knowledge", help="the knowledge index")
    knowledge_sub = knowledge.add_subparsers(dest="action", required=True)
    check = knowledge_sub.add_parser("check", help="compare SQL chunks with index vectors")
    check.add_argument(
        "--repair", action="store_true", help="remove orphans, add missing; rebuild a broken index"
    )
    check.add_argument(
        "--rebuild", action="store_true", help="empty the index and embed every chunk from SQL"
    )
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=knowledge_check)
