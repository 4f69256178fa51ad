"""API keys, and who is calling the API.

    new = create_key(engine, "alice", role="user", groups=["hr"])   # new.secret: shown once only
    list_keys(engine)                        # rows (prefix, user, role, groups, created, revoked)
    revoke_key(engine, "prt_AbCd1234")       # by id or prefix; the key is refused from then on
    authenticate(engine, new.secret)         # Principal(user="alice", role="user", groups=("hr",))

In the app (`serving.auth: keys`, the default): `gate` runs before every route and demands a valid
key (`Authorization: Bearer <key>`) for `/v1/*` and `/tokenize`, an admin key for `/admin/*`;
routes that admins alone may use beside those (uploads, deletes) add `Depends(require_admin)`, and
routes read the caller with `Depends(current_principal)`. Missing, unknown or revoked keys: 401; a `user` key
doing an admin's job: 403. `/healthz`, `/readyz`, `/metrics` and web pages need no key.

`serving.auth: open` is for the local demo: no keys, every caller is the local admin `local`
(no groups). It is refused unless `serving.host` is a loopback address, and says so loudly at start.

Roles: `user` chats, searches, lists and reads the documents it may see, gives feedback on its own
exchanges and sets its own training opt-out; `admin` may also upload, delete, reload, promote and
roll back, list every document and give feedback on any exchange. A key's groups decide which
group documents retrieval may use, for admins too (admin is about operating the service).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from assistant.tables import ApiKey
from knowledge.acl import clean_groups
from knowledge.errors import (
    BadInputError,
    ConfigError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)
from knowledge.settings import Settings
from knowledge.tables import utcnow

log = logging.getLogger(__name__)

ROLES = ("user", "admin")
KEY_MARK = "prt_"  # makes a leaked key recognisable (and greppable by secret scanners)
PREFIX_LEN = len(KEY_MARK) + 8  # shown in listings; identifies a key without revealing it


@dataclass(frozen=True)
class Principal:
    """The caller: whose exchanges, which role, which document groups."""

    user: str
    role: str
    groups: tuple[str, ...] = ()
    key_prefix: str | None = None  # None in open mode

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


LOCAL_ADMIN = Principal(user="local", role="admin")


@dataclass(frozen=True)
class NewKey:
    id: int
    prefix: str
    secret: str  # the only time the whole key exists outside the caller's hands
    user: str
    role: str
    groups: tuple[str, ...]


def hash_key(secret: str) -> str:
    # A plain SHA-256 is enough here, unlike for passwords: keys are 256 random bits, so there is
    # nothing to guess from a stolen hash, and a fast hash lets each request find its key with one
    # indexed lookup instead of trying a slow KDF against every stored key.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    engine: Engine, user: str, role: str = "user", groups: Sequence[str] | str | None = None
) -> NewKey:
    """Store a new key for `user` and return it; only its hash and prefix are kept."""
    user = user.strip()
    if not user:
        raise BadInputError("a key needs a user name")
    if role not in ROLES:
        raise BadInputError(f"role must be one of {ROLES}, got {role!r}")
    names = clean_groups(groups, strict=True)
    secret = KEY_MARK + secrets.token_urlsafe(32)
    row = ApiKey(
        prefix=secret[:PREFIX_LEN],
        key_hash=hash_key(secret),
        user=user,
        role=role,
        groups=",".join(names),
    )
    with Session(engine, expire_on_commit=False) as session:
        session.add(row)
        session.commit()
    assert row.id is not None
    return NewKey(row.id, row.prefix, secret, user, role, tuple(names))


def list_keys(engine: Engine) -> list[ApiKey]:
    with Session(engine) as session:
        return list(session.exec(select(ApiKey).order_by(col(ApiKey.id))))


def revoke_key(engine: Engine, ident: str) -> ApiKey:
    """Revoke the key with id or prefix `ident` (revoking twice keeps the first time)."""
    column = col(ApiKey.id) if ident.isdigit() else col(ApiKey.prefix)
    value: int | str = int(ident) if ident.isdigit() else ident
    with Session(engine, expire_on_commit=False) as session:
        row = session.exec(select(ApiKey).where(column == value)).first()
        if row is None:
            raise NotFoundError(f"no API key with id or prefix {ident!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            session.add(row)
            session.commit()
        return row


def authenticate(engine: Engine, secret: str) -> Principal:
    """The principal of an active key; UnauthorizedError for unknown or revoked keys."""
    with Session(engine) as session:
        row = session.exec(select(ApiKey).where(col(ApiKey.key_hash) == hash_key(secret))).first()
    if row is None:
        raise UnauthorizedError("unknown API key")
    if row.revoked_at is not None:
        raise UnauthorizedError(f"API key {row.prefix} was revoked")
    return Principal(row.user, row.role, tuple(g for g in row.groups.split(",") if g), row.prefix)


def check_open_mode(settings: Settings) -> None:
    """Refuse open mode off loopback; warn loudly when it is on. Call before serving."""
    if settings.serving.auth != "open":
        return
    host = settings.serving.host
    if not is_loopback(host):
        raise ConfigError(
            f"serving.auth 'open' (no API keys) is only allowed on a loopback address, not on "
            f"{host!r}: use serving.auth 'keys' and `protege keys create`, or bind 127.0.0.1"
        )
    log.warning(
        "\n%s\n!! OPEN MODE: no API keys; every caller on %s is the local ADMIN.\n"
        "!! For a local demo only. Set serving.auth: keys for anything else.\n%s",
        "!" * 78, host, "!" * 78,
    )  # fmt: skip


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


# ---- FastAPI dependencies ----------------------------------------------------------------------
def current_principal(request: Request) -> Principal:
    """The caller of this request (sync: FastAPI runs it in a thread, it queries the database)."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    if request.app.state.settings.serving.auth == "open":
        principal = LOCAL_ADMIN
    else:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError(
                "an API key is required: send 'Authorization: Bearer <key>' "
                "(an admin creates keys with `protege keys create`)"
            )
        principal = authenticate(request.app.state.db, token.strip())
    request.state.principal = principal
    return principal


def require_admin(principal: Principal = Depends(current_principal)) -> Principal:
    if not principal.is_admin:
        raise ForbiddenError(f"user {principal.user!r} (role {principal.role}) may not do this")
    return principal


def is_protected(path: str) -> bool:
    """/v1/* (known or not), /tokenize and /admin[/*] need a key."""
    return path.startswith(("/v1/", "/admin/")) or path in ("/v1", "/admin", "/tokenize")


def gate(request: Request) -> None:
    """App-wide: /v1/* and /tokenize need a key, /admin/* an admin key, whoever adds the route.

    `assistant.guard.RequestGuard` has already refused requests without a valid key on every
    protected path (routes or not); this keeps routes safe in an app without the guard.
    """
    path = request.url.path
    if path == "/admin" or path.startswith("/admin/"):
        require_admin(current_principal(request))
    elif is_protected(path):
        current_principal(request)


def may_see(principal: Principal, visibility: str, groups: Collection[str]) -> bool:
    """Whether the caller may see a document's entry in listings (admins see every entry)."""
    if principal.is_admin or visibility == "company":
        return True
    return bool(set(groups) & set(principal.groups))
