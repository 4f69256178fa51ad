"""`protege evals list|show ID`: the held-out questions the gate asks about each document.

protege evals list [--document ID] [--json]     # every item (or one document version's)
protege evals show ID [--json]                  # one item in full

The teacher writes them during each cycle (learner/evals/written.py); an admin edits them with
`POST/PATCH/DELETE /admin/evals` (assistant/routes_evals.py) or on the learning page.
"""

from __future__ import annotations

import argparse
import json

from knowledge.db import open_database
from knowledge.settings import Settings


def _evals(settings: Settings, args: argparse.Namespace) -> int:
    from learner.evals.written import get_item, item_json, list_items

    engine = open_database(settings.db_url)
    if args.action == "show":
        row = item_json(get_item(engine, args.id))  # NotFoundError -> a one-line CLI error
        if args.json:
            print(json.dumps(row, indent=2))
        else:
            for key, value in row.items():
                print(f"{key:>12}: {value}")
        return 0
    rows = [item_json(i) for i in list_items(engine, args.document)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no eval items (the next cycle writes them for new documents)")
        return 0
    print(f"{'id':>5} {'doc':>5} {'set':10} {'origin':7} question -> answer")
    for row in rows:
        qa = f"{row['question']} -> {row['answer']}"
        print(
            f"{row['id']:>5} {row['document_id']:>5} {row['set']:10} {row['origin']:7} {qa[:100]}"
        )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    evals = sub.add_parser("evals", help="eval items written from the documents: list, show one")
    evals_sub = evals.add_subparsers(dest="action", required=True)
    listing = evals_sub.add_parser("list", help="by document, then id")
    listing.add_argument("--document", type=int, help="only this document version's items")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_evals)
    show = evals_sub.add_parser("show", help="one item")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_evals)
