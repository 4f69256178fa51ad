"""Settings: one pydantic model loaded from a YAML profile in `configs/`.

The model lives in the lowest layer (`knowledge`) because every layer reads it and imports
only flow `assistant -> learner -> knowledge`.

    settings = load_settings("sandbox")          # configs/sandbox.yaml
    settings = load_settings("/path/to/my.yaml")

Environment overrides: `PROTEGE_HOME` (data directory), `PROTEGE_DATABASE_URL`,
`PROTEGE_CONFIG` (profile used when none is given).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from knowledge.errors import ConfigError
from knowledge.learner_settings import (  # noqa: F401 - re-exported: the sections' usual import
    DistillConfig,
    EvalConfig,
    GateConfig,
    LearnerConfig,
    LoraConfig,
    MidtrainConfig,
    SourcesConfig,
)
from knowledge.section import Section as _Section


def _config_dir() -> Path:
    """configs/ of a source checkout, else the copy an installed wheel carries as package data
    (`knowledge/profiles/`, mapped from configs/ in pyproject.toml)."""
    source = Path(__file__).resolve().parent.parent / "configs"
    return source if source.is_dir() else Path(__file__).resolve().parent / "profiles"


CONFIG_DIR = _config_dir()
DEFAULT_HOME = Path("~/.local/share/protege")


class ModelsConfig(_Section):
    """Which models to use. `sandbox:<name>` resolves inside the built sandbox."""

    student: str = "sandbox:student"
    """The model trained and served: `sandbox:student` (the built sandbox's), a model folder or
    a Hugging Face hub id."""
    teacher: str = "previous"
    """The OPD teacher. "previous": the model served when the cycle starts, frozen: the reference
    recipe's "model before mid-training" (the base model while nothing is promoted; the served
    adapter after); "base": the raw base weights, whatever is served (forgets what earlier nights
    learned); "server:http://host:port/v1[#model]": a completions server (vLLM, or another
    protege) scoring with prompt_logprobs (learner/teachers/server.py); anything else: a model
    folder or hub id sharing the student's tokenizer."""
    general_teacher: Literal["base", "teacher"] = "base"
    """Who scores OPD's general prompts (instruction tasks, questions about what the base knew
    before any document). "base": the raw base weights (with `teacher: previous` the instruction
    following one night loses is then restored toward the base's the next night instead of
    becoming its floor; measured: README "Thirteenth search"), while the questions about company
    documents stay with `teacher`; "teacher": the teacher above scores every prompt (a larger
    teacher that follows instructions better than the base, as in the qwen3 profile). The same
    on night 1, where the previous model is the base."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where models run; "auto": CUDA when a GPU is visible, else CPU ("cuda" without one is a
    config error)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """The dtype the student and a local teacher are loaded in."""
    torch_threads: int | None = 2
    """CPU threads torch may use (`torch.set_num_threads`) while training and serving; null:
    torch's own default."""


class SandboxConfig(_Section):
    """The sandbox: a fictional company's documents, eval sets and tiny models
    (`protege sandbox build`)."""

    size: Literal["test", "demo"] = "demo"
    """Which sandbox: "test" (tiny, built in about a minute, for tests) or "demo" (the one the
    benchmarks and the demo use)."""
    seed: int = 0
    """Seed of the sandbox build (world, documents and models); each size and seed is its own
    build, in `<size>-seed<seed>`."""
    dir: Path | None = None
    """Where sandboxes are built; null: `<home>/sandbox`."""


class KnowledgeConfig(_Section):
    """Documents, chunking, retrieval and the vector index (see README, "Knowledge")."""

    chunk_tokens: int = Field(160, gt=0)
    """Chunk size in the student's tokens (the tokenizer of the model reading them)."""
    chunk_overlap: int = Field(32, ge=0)
    """Tokens each chunk shares with the one before it; below `chunk_tokens`."""
    top_k: int = Field(3, gt=0)
    """Chunks retrieved per question: put in the prompt when serving, and used by open-book eval
    and document questions."""
    collection: str = "protege-chunks"
    """Name of the Chroma collection holding the chunk vectors."""
    chroma_url: str | None = None
    """null: embedded Chroma in `<home>/chroma`; "http://host:port": a Chroma server
    (`chroma run`)."""
    train_on: Literal["company_only", "all", "none"] = "company_only"
    """Which documents the nightly cycle may train on. Training bakes a document into weights that
    every user reaches, so group-restricted documents are left out unless this says "all"."""
    max_upload_bytes: int = Field(5_000_000, gt=0)
    """Largest file one upload or ingest may be, in bytes; larger: a clear 413-style error."""
    max_unpacked_bytes: int = Field(50_000_000, gt=0)
    """Most bytes a DOCX's ZIP members may unpack to, all together."""
    max_text_chars: int = Field(2_000_000, gt=0)
    """Most characters of text extracted from one file."""
    max_pages: int = Field(2_000, gt=0)
    """Most pages of one PDF."""
    max_groups: int = Field(32, gt=0)
    """Most groups on one access list (a key's or a document's; README, "Limits")."""
    max_group_chars: int = Field(64, gt=0)
    """Longest group name; each name: ASCII letters, digits, '_', '.', '@', '-'."""
    max_nesting_depth: int = Field(256, gt=0)
    """Deepest element/XML nesting a parser follows (HTML, DOCX, PDF outline): against parser
    bombs."""
    parse_timeout_seconds: float = Field(30.0, gt=0)
    """Wall time of one parse; it runs in a child process that is killed when the time is up."""
    job_threshold_bytes: int = Field(256_000, ge=0)
    """Uploads larger than this are ingested as a job: 202 and a status URL with progress."""
    max_queued_jobs: int = Field(16, gt=0)
    """Most ingest jobs waiting or running at once; more: 429 with Retry-After."""

    @model_validator(mode="after")
    def _overlap_fits(self) -> KnowledgeConfig:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be below chunk_tokens "
                f"({self.chunk_tokens})"
            )
        return self


class ServingConfig(_Section):
    """The OpenAI-compatible server (`protege serve`) and its limits."""

    host: str = "127.0.0.1"
    """Address the server listens on."""
    port: int = 8321
    """Port the server listens on."""
    engine: Literal["embedded", "vllm"] = "embedded"
    """What generates the answers: "embedded", the student loaded in this process; "vllm", a
    client of the vLLM server at `vllm_url`."""
    vllm_url: str | None = None
    """With engine "vllm": the vLLM OpenAI server (http://host:port, started with --enable-lora
    and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) that loads adapters from the registry's paths."""
    max_new_tokens: int = 64
    """Most tokens one completion may generate (a chat request that asks for none gets this
    many)."""
    registry_poll_seconds: float = 10.0
    """How often the server checks the registry for a newly promoted adapter to swap in."""
    retrieval: bool = True
    """Put retrieved chunks the caller may see into chat prompts (a request can still ask for
    closed-book)."""
    reload_url: str | None = None
    """Where the nightly cycle notifies serving of a new adapter; null: http://host:port."""
    auth: Literal["keys", "open"] = "keys"
    """Access control. "keys": every /v1 and /admin call needs `Authorization: Bearer <key>`
    (`protege keys create`); "open": no keys, everyone is a local admin; refused unless `host`
    is a loopback address."""
    max_body_bytes: int = Field(1_048_576, gt=0)
    """Largest request body (README, "Limits"); uploads to /v1/documents have their own:
    knowledge.max_upload_bytes + 64 KiB."""
    max_prompt_chars: int = Field(100_000, gt=0)
    """Most characters of the chat messages together, a prompt, or a /tokenize request."""
    max_messages: int = Field(256, gt=0)
    """Most messages in one chat or /tokenize request."""
    max_prompts_per_request: int = Field(16, gt=0)
    """Most prompts in one /v1/completions request."""
    max_tokens_per_request: int = Field(32_768, gt=0)
    """Most prompt tokens over a request's prompts."""
    max_stop_strings: int = Field(16, ge=0)
    """Most stop strings in one request."""
    max_stop_chars: int = Field(256, gt=0)
    """Longest stop string, in characters."""
    max_concurrent_per_key: int = Field(8, gt=0)
    """Requests in flight per API key; more: 429."""
    header_timeout_seconds: float = Field(10.0, gt=0)
    """Time for the request line and headers, from connect."""
    body_timeout_seconds: float = Field(60.0, gt=0)
    """Time for the whole body, from the end of the headers."""
    max_connections: int = Field(512, gt=0)
    """Open connections; more are answered 503 and closed."""
    keep_alive_seconds: int = Field(5, gt=0)
    """How long an idle keep-alive connection stays open."""
    shutdown_timeout_seconds: int = Field(10, gt=0)
    """On shutdown, requests still running after this long are cancelled."""
    api_docs: bool = False
    """Serve /docs and /redoc (they load Swagger UI / ReDoc from a CDN: off unless asked for)."""


class ScheduleConfig(_Section):
    """When the nightly cycle runs (`protege schedule`, or inside the server)."""

    cron: str = "0 2 * * *"
    """Crontab expression (minute hour day month weekday) of the nightly cycle."""
    timezone: str = "UTC"
    """Time zone the cron expression is read in."""
    misfire_grace_seconds: int = 3600
    """A scheduler that was down at the tick still runs the cycle if it is back within this
    long."""
    lease_seconds: float = Field(300, gt=0)
    """One cycle at a time across processes/hosts (learner/lease.py): a holder that dies frees the
    lease this long after its last heartbeat (heartbeats every quarter of it)."""
    webhook_url: str | None = None
    """POSTed {run_id, status, message, adapter_version, metrics} after every cycle
    (learner/webhook.py)."""
    in_server: bool = False
    """Run the schedule inside `protege serve` (no separate `protege schedule` process
    needed)."""


class Settings(_Section):
    """The whole configuration: one YAML profile (configs/), sections below."""

    profile: str = "custom"
    """The profile these settings were loaded from (set by load_settings; the scheduler reloads it
    for each cycle)."""
    home: Path = DEFAULT_HOME
    """Data directory (database, index, adapters, runs, sandbox); PROTEGE_HOME overrides."""
    database_url: str | None = None
    """SQLAlchemy URL of the application database; null: SQLite `<home>/protege.db`;
    PROTEGE_DATABASE_URL overrides."""
    models: ModelsConfig = ModelsConfig()
    """Which models to use."""
    sandbox: SandboxConfig = SandboxConfig()
    """The sandbox build."""
    knowledge: KnowledgeConfig = KnowledgeConfig()
    """Documents, chunking, retrieval and upload limits."""
    learner: LearnerConfig = LearnerConfig()
    """The nightly cycle."""
    serving: ServingConfig = ServingConfig()
    """The server and its limits."""
    schedule: ScheduleConfig = ScheduleConfig()
    """When the nightly cycle runs."""

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'protege.db'}"

    @property
    def chroma_dir(self) -> Path:
        return self.home / "chroma"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def sandbox_dir(self) -> Path:
        return self.sandbox.dir or self.home / "sandbox"

    @property
    def server_url(self) -> str:
        return self.serving.reload_url or f"http://{self.serving.host}:{self.serving.port}"


def profile_path(profile: str) -> Path:
    path = Path(profile)
    if path.suffix in {".yaml", ".yml"} and path.exists():
        return path
    candidate = CONFIG_DIR / f"{profile}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"unknown config profile {profile!r} (known: {known}; or give a .yaml path)")


def _merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, section by section (a mapping merges, anything else replaces)."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def read_profile(profile: str, _seen: tuple[Path, ...] = ()) -> dict:
    """A profile's YAML as data, with `extends: <profile>` resolved (the named profile first,
    this file's sections merged over it): a deployment's file states only what differs."""
    path = profile_path(profile).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: `extends` loops back to itself")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile is a mapping of sections, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: `extends` names one profile, got {parent!r}")
    if parent.endswith((".yaml", ".yml")) and not Path(parent).is_absolute():
        parent = str(path.parent / parent)  # a path is relative to the file that names it
    return _merge(read_profile(parent, (*_seen, path)), raw)


def load_settings(profile: str | None = None, **overrides: object) -> Settings:
    """Load a profile (resolving `extends`), apply `PROTEGE_*` environment overrides, validate."""
    profile = profile or os.environ.get("PROTEGE_CONFIG", "sandbox")
    path = profile_path(profile)
    raw = read_profile(profile)
    raw.setdefault("profile", profile)  # what load_settings() needs to load it again
    if home := os.environ.get("PROTEGE_HOME"):
        raw["home"] = home
    if url := os.environ.get("PROTEGE_DATABASE_URL"):
        raw["database_url"] = url
    raw.update(overrides)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid config:\n{exc}") from exc
    settings.home = settings.home.expanduser().resolve()
    return settings


def dump_settings(settings: Settings) -> dict:
    """The resolved config as plain JSON-able data (saved next to every adapter and run)."""
    return settings.model_dump(mode="json")
