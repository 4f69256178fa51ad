"""`protege keys create|list|revoke` and `protege conversations export`.

    protege keys create alice --role user --groups hr,finance   # prints the key once: keep it
    protege keys create ops --role admin
    protege keys list [--json]                                  # prefixes, never secrets
    protege keys revoke prt_AbCd1234                            # by prefix or id
    protege conversations export [--out FILE] [--since 2026-11-01] > chats.jsonl

The export writes one JSON object per exchange, oldest first: id, created_at, user, messages,
answer, chunk_ids, adapter_version, latency_ms, prompt/completion tokens, aborted, feedback (every rating
with its comment) and training_opt_out (the user's current choice).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from knowledge.db import open_database
from knowledge.errors import BadInputError
from knowledge.settings import Settings


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from assistant.auth import create_key, list_keys, revoke_key

    db = open_database(settings.db_url)
    if args.action == "create":
        key = create_key(db, args.name, role=args.role, groups=args.groups)
        print(f"created key {key.id} ({key.prefix}) for {key.user}, role {key.role}, "
              f"groups {','.join(key.groups) or '-'}")  # fmt: skip
        print(f"\n    {key.secret}\n")
        print("This is the only time the key is shown; only its hash is stored.")
        return 0
    if args.action == "revoke":
        row = revoke_key(db, args.key)
        print(
            f"revoked key {row.id} ({row.prefix}) of {row.user} at {row.revoked_at:%Y-%m-%d %H:%M}"
        )
        return 0
    rows = list_keys(db)
    if args.json:
        print(json.dumps([_key_json(r) for r in rows], indent=2))
        return 0
    print(f"{'id':>4} {'prefix':12} {'user':16} {'role':5} {'groups':20} {'created':16} revoked")
    for r in rows:
        revoked = f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "-"
        print(f"{r.id:>4} {r.prefix:12} {r.user[:16]:16} {r.role:5} {(r.groups or '-')[:20]:20} "
              f"{r.created_at:%Y-%m-%d %H:%M} {revoked}")  # fmt: skip
    return 0


def _key_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "prefix": row.prefix,
        "user": row.user,
        "role": row.role,
        "groups": [g for g in row.groups.split(",") if g],
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


def parse_since(text: str) -> datetime:
    """A date or ISO datetime; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadInputError(f"--since: not a date: {text!r} (use 2026-11-01 or ISO 8601)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def export_conversations(db: Engine, out: IO[str], since: datetime | None = None) -> int:
    """Write the exchanges (newer than `since`) as JSONL to `out`; returns how many."""
    from knowledge.optout import opted_out_users
    from knowledge.tables import Exchange, Feedback

    opted_out = opted_out_users(db)
    with Session(db) as session:
        query = select(Exchange).order_by(col(Exchange.id))
        if since is not None:
            query = query.where(col(Exchange.created_at) >= since)
        exchanges = list(session.exec(query))
        feedback: dict[int, list[dict[str, Any]]] = defaultdict(list)
        ids = [e.id for e in exchanges]
        if ids:
            rows = session.exec(
                select(Feedback)
                .where(col(Feedback.exchange_id).in_(ids))
                .order_by(col(Feedback.id))
            )
            for f in rows:
                feedback[f.exchange_id].append({"rating": f.rating, "comment": f.comment,
                    "user": f.user, "created_at": f.created_at.isoformat()})  # fmt: skip
    for e in exchanges:
        record = {
            "id": e.id,
            "created_at": e.created_at.isoformat(),
            "user": e.user,
            "messages": json.loads(e.messages_json),
            "answer": e.answer,
            "chunk_ids": json.loads(e.chunk_ids_json),
            "adapter_version": e.adapter_version,
            "latency_ms": e.latency_ms,
            "prompt_tokens": e.prompt_tokens,
            "completion_tokens": e.completion_tokens,
            "aborted": e.aborted,  # the client closed the streamed answer before its end
            "feedback": feedback.get(e.id or 0, []),
            "training_opt_out": e.user in opted_out,
        }
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(exchanges)


def _conversations(settings: Settings, args: argparse.Namespace) -> int:
    db = open_database(settings.db_url)
    since = parse_since(args.since) if args.since else None
    if args.out is None:
        export_conversations(db, sys.stdout, since)
        return 0
    with open(args.out, "w", encoding="utf-8") as fh:
        n = export_conversations(db, fh, since)
    print(f"exported {n} exchange(s) to {args.out}", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `keys` and `conversations` on the CLI's subparsers."""
    keys = sub.add_parser("keys", help="API keys: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="a new key (printed once)")
    create.add_argument("name", help="the user the key acts as (logged with each exchange)")
    create.add_argument("--role", choices=["user", "admin"], default="user")
    create.add_argument("--groups", help="comma-separated document groups the key may read")
    create.set_defaults(func=_keys)
    listing = keys_sub.add_parser("list", help="every key: prefix, user, role, groups, revoked")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_keys)
    revoke = keys_sub.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key", help="the key's id or prefix")
    revoke.set_defaults(func=_keys)

    conversations = sub.add_parser("conversations", help="the logged chat exchanges")
    conv_sub = conversations.add_subparsers(dest="action", required=True)
    export = conv_sub.add_parser("export", help="as JSONL, with feedback")
    export.add_argument("--out", help="file to write (default: standard output)")
    export.add_argument("--since", help="only exchanges from this date/time on (UTC unless given)")
    export.set_defaults(func=_conversations)
