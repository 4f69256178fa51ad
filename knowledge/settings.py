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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from knowledge.errors import ConfigError


def _config_dir() -> Path:
    """configs/ of a source checkout, else the copy an installed wheel carries as package data
    (`knowledge/profiles/`, mapped from configs/ in pyproject.toml)."""
    source = Path(__file__).resolve().parent.parent / "configs"
    return source if source.is_dir() else Path(__file__).resolve().parent / "profiles"


CONFIG_DIR = _config_dir()
DEFAULT_HOME = Path("~/.local/share/protege")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelsConfig(_Section):
    """Which models to use. `sandbox:<name>` resolves inside the built sandbox."""

    student: str = "sandbox:student"
    # "previous": the model served when the cycle starts, frozen: the reference recipe's "model
    # before mid-training" (the base model while nothing is promoted; the served adapter after);
    # "base": the raw base weights, whatever is served (forgets what earlier nights learned);
    # "server:http://host:port/v1[#model]": a completions server (vLLM, or another protege)
    # scoring with prompt_logprobs (learner/teachers/server.py);
    # anything else: a model folder or hub id sharing the student's tokenizer.
    teacher: str = "previous"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    torch_threads: int | None = None


class SandboxConfig(_Section):
    size: Literal["test", "demo"] = "demo"
    seed: int = 0
    dir: Path | None = None  # where sandboxes are built; default <home>/sandbox


class KnowledgeConfig(_Section):
    """Documents, chunking, retrieval and the vector index (see README, "Knowledge")."""

    # Chunk size and overlap in the student's tokens (the tokenizer of the model reading them).
    chunk_tokens: int = Field(160, gt=0)
    chunk_overlap: int = Field(32, ge=0)
    top_k: int = Field(3, gt=0)
    collection: str = "protege-chunks"
    # None: embedded Chroma in <home>/chroma; "http://host:port": a Chroma server (`chroma run`).
    chroma_url: str | None = None
    # Which documents the nightly cycle may train on. Training bakes a document into weights that
    # every user reaches, so group-restricted documents are left out unless this says "all".
    train_on: Literal["company_only", "all", "none"] = "company_only"
    # Limits on what one upload may cost (each refusal is a clear 400/413-style error).
    max_upload_bytes: int = Field(5_000_000, gt=0)
    max_unpacked_bytes: int = Field(50_000_000, gt=0)  # a DOCX's ZIP members, all together
    max_text_chars: int = Field(2_000_000, gt=0)  # text extracted from one file
    max_pages: int = Field(2_000, gt=0)  # PDF pages
    # Hardening (README, "Limits"). Access lists stay small: a key's or a document's groups.
    max_groups: int = Field(32, gt=0)
    max_group_chars: int = Field(64, gt=0)  # each name: ASCII letters, digits, '_', '.', '@', '-'
    # Parser bombs: element/XML nesting (HTML, DOCX, PDF outline) and wall time of one parse
    # (it runs in a child process that is killed when the time is up).
    max_nesting_depth: int = Field(256, gt=0)
    parse_timeout_seconds: float = Field(30.0, gt=0)
    # Uploads larger than this are ingested as a job: 202 and a status URL with progress.
    job_threshold_bytes: int = Field(256_000, ge=0)
    max_queued_jobs: int = Field(16, gt=0)  # more: 429 with Retry-After

    @model_validator(mode="after")
    def _overlap_fits(self) -> KnowledgeConfig:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be below chunk_tokens "
                f"({self.chunk_tokens})"
            )
        return self


class LoraConfig(_Section):
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = Field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )


class MidtrainConfig(_Section):
    """Mid-training (learner/midtrain.py): the new documents, their facts as QA pairs, replay of
    earlier nights' documents and pairs, and background chat sampled from the model itself."""

    # Share of label tokens from documents and QA pairs (new and replayed); the rest is
    # background chat re-sampled from the current model.
    doc_fraction: float = Field(0.4, gt=0, le=1)
    # Train on question/answer pairs of the new documents' facts (learner/qa_pairs.py: the
    # sandbox's training phrasings, else pairs the teacher writes from each chunk).
    qa_pairs: bool = True
    # Earlier documents and QA pairs replayed, in tokens per new token, drawn afresh each epoch.
    replay_ratio: float = Field(0.5, ge=0)
    replay_max_tokens: int = Field(200_000, ge=0)  # per epoch: bounds the cost as nights add up
    epochs: int = 8
    lr: float = 3e-3
    seq_len: int = 128
    batch_size: int = 16
    warmup_steps: int = 10
    background_max_new_tokens: int = 48
    # 0 = greedy: the background replays what the model answers now (its knowledge), not
    # samples that are wrong more often than it is.
    background_temperature: float = Field(0.0, ge=0)
    # Background chat is trained toward the pre-cycle model's top-K next-token distribution
    # instead of its one sampled answer (learner/anchor.py, Learning without Forgetting); 0: off
    # (4 night-1 runs showed no gain over the spread of repeated runs: README "Third search").
    anchor_top_k: int = Field(0, ge=0)
    max_grad_norm: float = 1.0
    # JSONL {"messages": [...]} for background replay; sandbox: its own
    chat_prompts_file: str | None = None
    # Folder of .md/.txt texts about what the model knew before any company document, replayed
    # with earlier nights' documents (within the replay budget), so night 1 has replay too;
    # sandbox: its documents about the initially known entities.
    background_documents_dir: str | None = None


class DistillConfig(_Section):
    steps: int = 30
    prompts_per_step: int = 16
    group_size: int = 4
    max_new_tokens: int = 48
    temperature: float = 1.0
    lr: float = 3e-4
    kl_coef: float = 1.0
    discount: float = 0.0
    prompts_file: str | None = (
        None  # JSONL of {"messages": [...]} or {"prompt": str}; sandbox: its own
    )
    # The teacher scores answers to questions about the new documents with their retrieved chunks
    # in its prompt; the student answers closed-book (learner/teachers/privileged.py). Off until
    # a bench shows it helps.
    privileged_context: bool = False
    # Share of each step's OPD prompts that are questions about the new documents (sandbox: its
    # training questions; otherwise written by the teacher from the chunks; learner/doc_questions.py).
    doc_question_share: float = Field(0.0, ge=0.0, le=1.0)
    # Cross-entropy of the new facts' QA pairs added to the OPD loss with this weight (0: off):
    # the teacher does not know the new facts, and OPD alone pulls them back out.
    qa_ce_weight: float = Field(1.0, ge=0.0)
    qa_ce_pairs_per_step: int = Field(16, gt=0)
    qa_ce_anneal: bool = True  # the weight falls linearly to 0 over the OPD steps

    @model_validator(mode="after")
    def _doc_questions_need_context(self) -> DistillConfig:
        # Without the passages the teacher (the model before mid-training) does not know the new
        # documents: OPD on questions about them would pull the student back to not knowing.
        if self.doc_question_share > 0 and not self.privileged_context:
            raise ValueError("doc_question_share > 0 needs privileged_context: true")
        return self


class GateConfig(_Section):
    """When a candidate is promoted (learner/gate.py); every rule must pass."""

    ifeval_margin: float = 0.05  # candidate IFEval may be at most this far below the base model's
    # Candidate QA on the new documents' non-majority items (what a constant answer cannot get
    # right) must be at least the served model's plus this.
    min_new_qa_gain: float = 0.0
    # Without set information in the QA file: all QA may be at most this far below the served's.
    qa_tolerance: float = 0.0
    # QA on each earlier set (earlier nights' documents) may fall at most this much.
    earlier_qa_drop: float = 0.05
    # QA on entities known before any document may fall at most this below the base model's
    # (not the served one's: small drops must not add up over nights).
    known_qa_drop: float = 0.05


class EvalConfig(_Section):
    max_new_tokens: int = 64
    batch_size: int = 32
    # Eval sets; with sandbox models they default to the sandbox's own (QA of every ingested day).
    qa_file: str | None = None  # closed-book QA JSONL {"question", "answer"} on the new documents
    ifeval_file: str | None = (
        None  # IFEval JSONL {"key", "prompt", "instruction_id_list", "kwargs"}
    )
    known_qa_file: str | None = None  # QA on what the model knew before (forgetting check)


class SourcesConfig(_Section):
    """What the nightly cycle may train on: an explicit allow-list, one switch per source."""

    # New documents (mid-training), within `knowledge.train_on`. Off: every cycle is skipped.
    documents: bool = True
    # Logged chats, redacted, of users who have not opted out, as extra OPD prompts. Off by
    # default: turning it on is a decision about people's conversations, not a tuning knob.
    conversations: bool = False
    # The prompt files: background chat (`midtrain.chat_prompts_file`) and OPD prompts
    # (`distill.prompts_file`), or the sandbox's own.
    prompt_files: bool = True


class LearnerConfig(_Section):
    sources: SourcesConfig = SourcesConfig()
    lora: LoraConfig = LoraConfig()
    midtrain: MidtrainConfig = MidtrainConfig()
    distill: DistillConfig = DistillConfig()
    gate: GateConfig = GateConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = 0


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8321
    engine: Literal["embedded", "vllm"] = "embedded"
    # engine "vllm": the vLLM OpenAI server (http://host:port, started with --enable-lora and
    # VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) that loads adapters from the registry's paths.
    vllm_url: str | None = None
    max_new_tokens: int = 64
    registry_poll_seconds: float = 10.0
    retrieval: bool = True
    reload_url: str | None = None  # where the nightly cycle notifies serving; default host:port
    # "keys": every /v1 and /admin call needs `Authorization: Bearer <key>` (`protege keys create`).
    # "open": no keys, everyone is a local admin; refused unless `host` is a loopback address.
    auth: Literal["keys", "open"] = "keys"
    # Hardening (README, "Limits"): what one request or one client may cost.
    max_body_bytes: int = Field(1_048_576, gt=0)  # uploads: knowledge.max_upload_bytes + 64 KiB
    max_prompt_chars: int = Field(100_000, gt=0)  # chat messages together, a prompt, /tokenize
    max_messages: int = Field(256, gt=0)  # messages of one chat or /tokenize request
    max_prompts_per_request: int = Field(16, gt=0)  # /v1/completions
    max_tokens_per_request: int = Field(32_768, gt=0)  # prompt tokens over a request's prompts
    max_stop_strings: int = Field(16, ge=0)
    max_stop_chars: int = Field(256, gt=0)  # each stop string
    max_concurrent_per_key: int = Field(8, gt=0)  # requests in flight per API key; more: 429
    header_timeout_seconds: float = Field(10.0, gt=0)  # request line + headers, from connect
    body_timeout_seconds: float = Field(60.0, gt=0)  # the whole body, from the end of headers
    max_connections: int = Field(512, gt=0)  # open connections; more are answered 503 and closed
    keep_alive_seconds: int = Field(5, gt=0)
    shutdown_timeout_seconds: int = Field(10, gt=0)  # then requests still running are cancelled
    # /docs and /redoc load Swagger UI / ReDoc from a CDN: off unless asked for.
    api_docs: bool = False


class ScheduleConfig(_Section):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    misfire_grace_seconds: int = 3600
    # One cycle at a time across processes/hosts (learner/lease.py): a holder that dies frees the
    # lease this long after its last heartbeat (heartbeats every quarter of it).
    lease_seconds: float = Field(300, gt=0)
    # POSTed {run_id, status, message, adapter_version, metrics} after every cycle (learner/webhook.py).
    webhook_url: str | None = None
    # Run the schedule inside `protege serve` (no separate `protege schedule` process needed).
    in_server: bool = False


class Settings(_Section):
    profile: str = "custom"
    home: Path = DEFAULT_HOME
    database_url: str | None = None
    models: ModelsConfig = ModelsConfig()
    sandbox: SandboxConfig = SandboxConfig()
    knowledge: KnowledgeConfig = KnowledgeConfig()
    learner: LearnerConfig = LearnerConfig()
    serving: ServingConfig = ServingConfig()
    schedule: ScheduleConfig = ScheduleConfig()

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
