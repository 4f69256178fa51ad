"""Who may see a document: `company` (everyone) or `groups` (members of the named groups).

    groups = clean_groups(["hr", "finance"], strict=True)      # bounded, checked, sorted
    visible(document, ["hr"])                                   # the rule, on SQL rows (the truth)
    where = visible_where(session, ["hr"])                      # the same rule as a Chroma filter

Access control lives in SQL only (`document.visibility`, `document.groups`). The vector index
holds a chunk's vector, its text and three small integers (`vector_metadata`): nothing a request
can make large. Earlier versions kept one metadata key per group in Chroma, and one upload listing
20,000 groups wedged Chroma's compaction for good (issue 11). A Chroma-side filter is therefore
built from SQL: the ids of the documents the caller may see (`visible_where`).

Group lists are bounded (`knowledge.max_groups` names of at most `knowledge.max_group_chars`
ASCII letters, digits, '_', '.', '@', '-'); anything else is refused with InvalidGroupsError (422)
before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

from sqlmodel import Session, col, select

from knowledge.errors import BadInputError, InvalidGroupsError
from knowledge.tables import CURRENT, Chunk, Document

VISIBILITIES = ("company", "groups")
MAX_GROUPS = 32  # defaults of knowledge.max_groups / knowledge.max_group_chars
MAX_GROUP_CHARS = 64
_GROUP_NAME = re.compile(r"[A-Za-z0-9_.@-]+")


def clean_groups(
    groups: Sequence[str] | str | None,
    *,
    strict: bool,
    max_groups: int = MAX_GROUPS,
    max_chars: int = MAX_GROUP_CHARS,
) -> list[str]:
    """Sorted unique group names. `strict`: refuse malformed or too many; else drop them."""
    if groups is None:
        return []
    if isinstance(groups, str):  # a bare string would otherwise iterate characters
        # Refuse a huge field before splitting it: its size alone says it is too many groups.
        if strict and len(groups) > max_groups * (max_chars + 2) + 64:
            raise InvalidGroupsError(
                f"the groups field is {len(groups):,} characters; at most {max_groups} groups "
                f"of at most {max_chars} characters each are allowed"
            )
        groups = groups.split(",")
    names = sorted({g.strip() for g in groups if g and g.strip()})
    bad = [g for g in names if len(g) > max_chars or not _GROUP_NAME.fullmatch(g)]
    if bad and strict:
        shown = ", ".join(repr(g[:40]) for g in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise InvalidGroupsError(
            f"invalid group names ({len(bad)}): {shown}; a group name is 1 to {max_chars} "
            "ASCII letters, digits, '_', '.', '@' or '-'"
        )
    # Dropping a caller's malformed group can only hide documents, never reveal them.
    names = [g for g in names if g not in bad]
    if len(names) > max_groups:
        if strict:
            raise InvalidGroupsError(f"{len(names):,} groups given; at most {max_groups} allowed")
        names = names[:max_groups]  # likewise: fewer groups can only hide documents
    return names


def check_access(
    visibility: str,
    groups: Sequence[str] | str | None,
    *,
    max_groups: int = MAX_GROUPS,
    max_chars: int = MAX_GROUP_CHARS,
) -> list[str]:
    """Validate an upload's access settings; returns the clean group list."""
    if visibility not in VISIBILITIES:
        raise BadInputError(f"visibility must be one of {VISIBILITIES}, got {visibility[:40]!r}")
    names = clean_groups(groups, strict=True, max_groups=max_groups, max_chars=max_chars)
    if visibility == "groups" and not names:
        raise BadInputError("visibility 'groups' needs at least one group")
    if visibility == "company" and names:
        # Refuse rather than drop: a forgotten visibility would publish a private document.
        raise BadInputError("groups given but visibility is 'company'; use 'groups'")
    return names


def document_groups(document: Document) -> list[str]:
    return [g for g in document.groups.split(",") if g]


def visible(document: Document, caller_groups: Collection[str]) -> bool:
    if document.visibility == "company":
        return True
    return bool(set(document_groups(document)) & set(caller_groups))


def visible_document_ids(session: Session, caller_groups: Sequence[str]) -> list[int]:
    """Ids of the current documents callers in `caller_groups` may see (SQL decides)."""
    query = select(Document.id, Document.visibility, Document.groups)
    rows = session.exec(query.where(Document.status == CURRENT).order_by(col(Document.id)))
    caller = set(caller_groups)
    return [
        doc_id
        for doc_id, visibility, groups in rows
        if doc_id is not None
        and (visibility == "company" or caller & set(filter(None, groups.split(","))))
    ]


def visible_where(
    session: Session, caller_groups: Sequence[str], max_ids: int | None = None
) -> dict[str, Any] | None:
    """A Chroma `where` filter: vectors of the documents the caller may see (from SQL, now).

    None when that is more than `max_ids` documents (a filter that long costs more than it saves;
    Chroma's SQLite also caps the variables of one statement).
    """
    ids = visible_document_ids(session, caller_groups)
    if max_ids is not None and len(ids) > max_ids:
        return None
    return {"document_id": {"$in": ids or [-1]}}  # Chroma refuses an empty $in list


def vector_metadata(document: Document, chunk: Chunk) -> dict[str, int]:
    """What Chroma stores beside a vector: small fixed integers only (see the module docstring).

    Citation fields (name, title, heading, pages) and access come from SQL with every hit.
    """
    return {
        "document_id": document.id or 0,
        "position": chunk.position,
        "version": document.version,
    }
