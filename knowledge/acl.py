"""Who may see a document: `company` (everyone) or `groups` (members of the named groups).

    groups = clean_groups(["hr", "finance"], strict=True)
    where = acl_where(["hr"])              # Chroma filter: company OR group:hr
    visible(document, ["hr"])              # the same rule, checked against SQL (the truth)

Chroma metadata carries `visibility` plus one boolean key per group (`group:hr: True`), so a
caller with groups [a, b] matches `{"$or": [company, group:a, group:b]}`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

from knowledge.errors import BadInputError
from knowledge.tables import Chunk, Document

VISIBILITIES = ("company", "groups")
GROUP_KEY = "group:"
_GROUP_NAME = re.compile(r"^[\w.@-]{1,64}$")  # also a safe Chroma metadata key suffix


def clean_groups(groups: Sequence[str] | str | None, *, strict: bool) -> list[str]:
    """Sorted unique group names. `strict`: refuse malformed ones; else drop them."""
    if groups is None:
        return []
    if isinstance(groups, str):  # a bare string would otherwise iterate characters
        groups = groups.split(",")
    names = sorted({g.strip() for g in groups if g and g.strip()})
    bad = [g for g in names if not _GROUP_NAME.match(g)]
    if bad and strict:
        raise BadInputError(f"invalid group names {bad}: use letters, digits, '_', '.', '@', '-'")
    # Dropping a caller's malformed group can only hide documents, never reveal them.
    return [g for g in names if g not in bad]


def check_access(visibility: str, groups: Sequence[str] | str | None) -> list[str]:
    """Validate an upload's access settings; returns the clean group list."""
    if visibility not in VISIBILITIES:
        raise BadInputError(f"visibility must be one of {VISIBILITIES}, got {visibility!r}")
    names = clean_groups(groups, strict=True)
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


def acl_where(caller_groups: Sequence[str]) -> dict[str, Any]:
    company = {"visibility": "company"}
    if not caller_groups:
        return company
    return {"$or": [company, *({f"{GROUP_KEY}{g}": True} for g in caller_groups)]}


def acl_metadata(document: Document) -> dict[str, str | bool]:
    return {
        "visibility": document.visibility,
        **{f"{GROUP_KEY}{g}": True for g in document_groups(document)},
    }


def vector_metadata(document: Document, chunk: Chunk) -> dict[str, str | int | bool]:
    """What Chroma stores beside a vector: ACL keys for filtering, citation fields for LangChain."""
    meta: dict[str, str | int | bool] = {
        "document_id": document.id or 0,
        "position": chunk.position,
        "name": document.name,
        "title": document.title,
        "version": document.version,
        **acl_metadata(document),
    }
    for key in ("heading", "page_start", "page_end"):  # Chroma refuses None values
        if (value := getattr(chunk, key)) is not None:
            meta[key] = value
    return meta
