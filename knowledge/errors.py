"""Every domain error of protege, in one place.

Raised anywhere; turned into HTTP errors (assistant/app.py) or CLI messages (assistant/cli.py)
only at the edge. `http_status` is the status the API answers with.
"""

from __future__ import annotations


class ProtegeError(Exception):
    http_status = 500


class ConfigError(ProtegeError):
    http_status = 500


class BadInputError(ProtegeError):
    http_status = 400


class UnsupportedDocumentError(BadInputError):
    http_status = 415


class MislabeledDocumentError(UnsupportedDocumentError):
    """The file's name says one type, its content another (e.g. `report.pdf` holding a ZIP)."""


class CorruptDocumentError(BadInputError):
    """A PDF/DOCX that cannot be read, or one that would unpack to far more than it weighs."""


class TooLargeError(BadInputError):
    http_status = 413


class ConflictError(ProtegeError):
    """Another writer changed the same document at the same moment; retrying is safe."""

    http_status = 409


class NotFoundError(ProtegeError):
    http_status = 404


class UnauthorizedError(ProtegeError):
    """No API key, or one that is unknown or revoked."""

    http_status = 401


class ForbiddenError(ProtegeError):
    """A valid key whose role may not do this (e.g. a `user` key uploading a document)."""

    http_status = 403


class SandboxNotBuiltError(ProtegeError):
    http_status = 503


class IncompatibleTeacherError(ProtegeError):
    """Teacher and student do not share a tokenizer / chat template."""


class AdapterIntegrityError(ProtegeError):
    """An adapter folder is missing, partial, or its checksum does not match the registry."""

    http_status = 409


class TaintedAdapterError(AdapterIntegrityError):
    """The adapter was trained on a forgotten document: it may never be served again."""


class NothingToTrainError(ProtegeError):
    """The nightly cycle found no new eligible data; the cycle is skipped, not failed."""

    http_status = 409


class UnsupportedInstructionError(BadInputError):
    """An IFEval instruction id this project has no checker for."""


class CycleBusyError(ProtegeError):
    """Another training cycle holds the lease."""

    http_status = 409


class TrainingRankError(ProtegeError):
    """A rank of a data-parallel training stage failed; the cycle stops, nothing is registered."""


class NoGPUError(ConfigError):
    """The profile asks for a CUDA GPU (`models.device: cuda`) and this host has none visible."""

    http_status = 503


class UpstreamUnavailableError(ProtegeError):
    """A server protege relies on (the vLLM engine's, a server teacher) cannot be reached."""

    http_status = 503


class InvalidGroupsError(BadInputError):
    """An upload's or key's group list is too long, or a name is too long or has odd characters."""

    http_status = 422


class TooComplexError(BadInputError):
    """A file nested too deeply, or one whose parsing ran past its time limit (a parser bomb)."""

    http_status = 422


class AccessConflictError(ConflictError):
    """The same bytes are stored already, with other access settings than this upload asks for."""


class RateLimitedError(ProtegeError):
    """Too many requests in flight for one API key, or too many ingest jobs queued."""

    http_status = 429

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IndexUnavailableError(ProtegeError):
    """The vector index cannot be read or written; `protege knowledge check --repair` rebuilds it."""

    http_status = 503


class ShuttingDownError(ProtegeError):
    """The server is stopping; the request may be sent again once it is back."""

    http_status = 503
