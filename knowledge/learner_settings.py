"""The learner's settings sections (`learner:` in a profile): sources, LoRA, mid-training,
distillation, the gate and the eval. Part of `knowledge.settings.Settings`, which re-exports them.

    from knowledge.settings import MidtrainConfig   # the usual import
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from knowledge.section import Section as _Section


class LoraConfig(_Section):
    """The LoRA adapter each night trains on the student (peft)."""

    rank: int = 16
    """LoRA rank (`r`)."""
    alpha: int = 32
    """LoRA alpha: the update is scaled by alpha / rank."""
    dropout: float = 0.0
    """Dropout on the LoRA layers' input while training."""
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
    """Names of the student's linear modules that get a LoRA adapter."""


class MidtrainConfig(_Section):
    """Mid-training (learner/midtrain.py): the new documents, their facts as QA pairs, replay of
    earlier nights' documents and pairs, and background chat sampled from the model itself."""

    doc_fraction: float = Field(0.4, gt=0, le=1)
    """Share of label tokens from documents and QA pairs (new and replayed); the rest is
    background chat re-sampled from the current model."""
    qa_pairs: bool = True
    """Train on question/answer pairs of the new documents' facts (learner/qa_pairs.py: the
    sandbox's training phrasings, else pairs the teacher writes from each chunk)."""
    formatted_share: float = Field(1.0, ge=0, le=1)
    """Share of the QA pairs (new and replayed) that also get a twin with a format instruction
    (lowercase, JSON, end phrase, ...) and the response rewritten to follow it
    (learner/formatted_pairs.py), so the facts are learned under instructions too (OPD's QA
    cross-entropy keeps the twins on); 0: off. IFEval's losses after mid-training sit on the
    prompts about the new entities (README "Sixth search")."""
    replay_ratio: float = Field(0.5, ge=0)
    """Earlier documents and QA pairs replayed, in tokens per new token, drawn afresh each
    epoch."""
    replay_max_tokens: int = Field(200_000, ge=0)
    """Most replayed tokens per epoch: bounds the cost as nights add up."""
    replay_balance: Literal["per_night", "pooled"] = "per_night"
    """How the replay (mid-training's, and OPD's replayed QA cross-entropy) is drawn:
    "per_night": each earlier night's documents and pairs, and the background's, an equal share
    (a night learned once gets as much replay as the background, ~5x its size in the sandbox;
    measured: README "Thirteenth search"); "pooled": from all earlier material at once, each
    source in proportion to its size (a day learned once then lost 5-8 points the next night)."""
    epochs: int = 8
    """Passes over the night's material (replay and background drawn afresh for each)."""
    lr: float = 3e-3
    """Peak AdamW learning rate: linear warmup, then cosine decay to a tenth of it."""
    seq_len: int = 256
    """Tokens per packed training row; whole examples are packed (one never straddles two rows),
    so a row must hold the longest chat with its prompt."""
    batch_size: int = 8
    """Packed rows per optimizer step."""
    warmup_steps: int = 10
    """Optimizer steps of linear learning-rate warmup."""
    background_max_new_tokens: int = 96
    """Longest background chat answer sampled from the model, in tokens; answers cut off there
    are left out."""
    background_temperature: float = Field(0.0, ge=0)
    """Sampling temperature of the background answers; 0 = greedy: the background replays what
    the model answers now (its knowledge), not samples that are wrong more often than it is."""
    anchor_top_k: int = Field(16, ge=0)
    """Background chat is trained toward the pre-cycle model's top-K next-token distribution
    instead of its one sampled answer (learner/anchor.py, Learning without Forgetting); 0: off
    (with whole-example packing: +3 points of known QA and +1 of IFEval over 2 seeds: README
    "Fifth search")."""
    max_grad_norm: float = 1.0
    """Gradient norm clipping per optimizer step."""
    chat_prompts_file: str | None = None
    """JSONL of {"messages": [...]} prompts for background replay; null: the sandbox's own with
    sandbox models, else no background chat."""
    background_documents_dir: str | None = None
    """Folder of .md/.txt texts about what the model knew before any company document, replayed
    with earlier nights' documents (within the replay budget), so night 1 has replay too;
    null: the sandbox's documents about its initially known entities with sandbox models, else
    none."""
    background_pairs: bool = True
    """Replay QA pairs of the background documents too, beside earlier nights' pairs (the
    sandbox: its base's own pre-training QA about the known entities; else pairs the teacher
    writes from each background chunk, kept when the answer is in it, once per text: one
    generation per chunk the first night): true answers that do not drift night after night as
    the model's own background answers do."""


class DistillConfig(_Section):
    """On-policy distillation (learner/distill.py): the student samples answers, the teacher
    scores every token, the update follows the per-token reverse KL."""

    steps: int = 100
    """OPD optimizer steps per cycle (100 against 50: +2.5 points of known QA on night 1, README
    "Sixth search"; the teacher knows the earlier facts mid-training blurred)."""
    prompts_per_step: int = 16
    """Prompts sampled per step."""
    group_size: int = 4
    """Answers the student samples per prompt."""
    max_new_tokens: int = 64
    """Longest sampled answer, in tokens (the eval's length: an answer cut off sooner never
    teaches its ending, e.g. an end phrase)."""
    temperature: float = Field(1.0, gt=0)
    """Temperature the student samples its answers at (the advantage and the importance ratio
    use the student's own log-probs, at temperature 1, whatever this is)."""
    lr: float = 1e-3
    """AdamW learning rate (constant, as in the reference recipe)."""
    kl_coef: float = 1.0
    """Scale of the per-token advantage `-kl_coef * (logp_student - logp_teacher)`."""
    discount: float = 0.0
    """With > 0 each token also gets the discounted advantages of the tokens after it (a
    per-token return); 0: the reference recipe."""
    prompts_file: str | None = None
    """JSONL of {"messages": [...]} or {"prompt": str} OPD prompts; null: the sandbox's own with
    sandbox models (other models need this file)."""
    sampler_url: str | None = None
    """A vLLM server (`--enable-lora`, runtime LoRA updating on) the student samples through
    during OPD, e.g. http://127.0.0.1:8000 (learner/vllm_sampler.py); null: transformers'
    generate in the training process."""
    sampler_refresh_every: int = Field(1, ge=1)
    """OPD steps between reloads of the trained adapter into the vLLM sampler (the importance
    ratio corrects for the staleness in between)."""
    privileged_context: bool = False
    """The teacher scores answers to questions about the new documents with their retrieved chunks
    in its prompt; the student answers closed-book (learner/teachers/privileged.py). Off until a
    bench shows it helps."""
    doc_question_share: float = Field(0.0, ge=0.0, le=1.0)
    """Share of each step's OPD prompts that are questions about the new documents (sandbox: its
    training questions; otherwise written by the teacher from the chunks;
    learner/doc_questions.py); above 0 needs `privileged_context`."""
    earlier_question_share: float = Field(0.25, ge=0.0, le=1.0)
    """Share of each step's OPD prompts that are questions about earlier nights' documents (their
    QA pairs' questions), when there are any and `models.teacher` is `previous`: that teacher
    knows their answers, so OPD restores what mid-training blurred of them (README "Sixth
    search"); another teacher did not learn them and would pull them out, so none are used."""
    qa_ce_weight: float = Field(1.0, ge=0.0)
    """Weight of the new facts' QA pairs' cross-entropy added to the OPD loss (0: off): the
    teacher does not know the new facts, and OPD alone pulls them back out."""
    qa_ce_pairs_per_step: int = Field(16, gt=0)
    """QA pairs drawn for the cross-entropy term each step."""
    qa_ce_anneal: bool = True
    """The QA cross-entropy weight falls linearly to 0 over the OPD steps."""
    qa_ce_replay_pairs_per_step: int = Field(16, ge=0)
    """Replayed QA pairs (earlier nights' and, with `midtrain.background_pairs`, the background
    documents') added to the cross-entropy each step at `qa_ce_weight`, never annealed: true
    answers hold earlier knowledge where the teacher (the previous model) already lost some (16
    against 8: 12 of 12 nights promoted over three seeds and two worlds, README "Fifteenth
    search")."""
    instruction_reward: float = Field(0.0, ge=0.0)
    """Weight of the IFEval checker's reward beside the reverse-KL advantage (0: off): on
    `instruction_prompts_per_step` general prompts with one or two verifiable instructions drawn
    onto them, each sampled answer's share of instructions followed, minus its group's mean, is
    added to its tokens' advantage (learner/instruction_reward.py). The checker does not drift
    night after night as the previous model does, but 0.3 held no more IFEval on chained nights
    than 0 (README "Tenth search"), so it is off."""
    instruction_prompts_per_step: int = Field(4, ge=0)
    """General prompts per step that get drawn instructions and the checker's reward (taken out
    of the step's `prompts_per_step`), when `instruction_reward` > 0."""

    @model_validator(mode="after")
    def _doc_questions_need_context(self) -> DistillConfig:
        # Without the passages the teacher (the model before mid-training) does not know the new
        # documents: OPD on questions about them would pull the student back to not knowing.
        if self.doc_question_share > 0 and not self.privileged_context:
            raise ValueError("doc_question_share > 0 needs privileged_context: true")
        return self


class GateConfig(_Section):
    """When a candidate is promoted (learner/gate.py); every rule must pass."""

    ifeval_margin: float = 0.05
    """Candidate IFEval may be at most this far below the base model's."""
    min_new_qa_gain: float = 0.0
    """Candidate QA on the new documents' non-majority items (what a constant answer cannot get
    right) must be at least the served model's plus this."""
    qa_tolerance: float = 0.0
    """Without set information in the QA file: all QA may be at most this far below the
    served model's."""
    earlier_qa_drop: float = 0.05
    """QA on each earlier set (earlier nights' documents) may fall at most this much."""
    known_qa_drop: float = 0.05
    """QA on entities known before any document may fall at most this below the base model's
    (not the served one's: small drops must not add up over nights)."""


class EvalConfig(_Section):
    """The evaluation before and after each cycle; with sandbox models the eval sets default to
    the sandbox's own (QA of every ingested day)."""

    max_new_tokens: int = 64
    """Longest generated eval answer, in tokens."""
    batch_size: int = 64
    """Eval prompts generated together."""
    qa_file: str | None = None
    """Closed-book QA JSONL {"question", "answer", "set"} on the documents. Unset: the teacher
    writes held-out items from each new document's chunks (learner/evals/written.py; the
    sandbox's day documents bring their own)."""
    written_items_per_document: int = Field(default=16, ge=1, le=1000)
    """Most eval items the teacher writes per new document version (one per chunk, the chunks
    spread over the document), so eval time grows with documents, not with their length."""
    max_earlier_items: int = Field(default=1000, ge=1)
    """Most QA (and cloze) items of earlier sets scored per evaluation, drawn at random with a
    fixed seed, so the eval cost stops growing as nights add up (this cycle's new sets are always
    scored whole; 1000 items: a standard error of at most ~1.6 points)."""
    ifeval_file: str | None = None
    """IFEval JSONL {"key", "prompt", "instruction_id_list", "kwargs"}. Unset: every sandbox
    day's held-out items, or outside the sandbox the shipped company set (learner/evals/data)."""
    known_qa_file: str | None = None
    """QA JSONL on what the model knew before (forgetting check)."""


class SourcesConfig(_Section):
    """What the nightly cycle may train on: an explicit allow-list, one switch per source."""

    documents: bool = True
    """New documents (mid-training), within `knowledge.train_on`. Off: every cycle is skipped."""
    conversations: bool = False
    """Logged chats, redacted, of users who have not opted out, as extra OPD prompts. Off by
    default: turning it on is a decision about people's conversations, not a tuning knob."""
    prompt_files: bool = True
    """The prompt files: background chat (`midtrain.chat_prompts_file`) and OPD prompts
    (`distill.prompts_file`), or the sandbox's own."""


class DistributedConfig(_Section):
    """Data-parallel mid-training and OPD (learner/data_parallel.py)."""

    processes: int = Field(1, ge=1)
    """Ranks that train together. 1: in the cycle's own process. N > 1: mid-training and OPD
    run on N processes started with `accelerate launch` (gloo on CPU, NCCL on GPUs); each rank
    takes its share of every batch, gradients are averaged, rank 0 saves the adapter; the rest
    of the cycle (evals, gate, registry) stays in the cycle's process."""


class LearnerConfig(_Section):
    """The nightly cycle: mid-training, distillation, evaluation and the promotion gate."""

    sources: SourcesConfig = SourcesConfig()
    """What the cycle may train on."""
    lora: LoraConfig = LoraConfig()
    """The LoRA adapter trained each night."""
    midtrain: MidtrainConfig = MidtrainConfig()
    """Mid-training on the new documents."""
    distill: DistillConfig = DistillConfig()
    """On-policy distillation after mid-training."""
    gate: GateConfig = GateConfig()
    """When a candidate is promoted."""
    eval: EvalConfig = EvalConfig()
    """The evaluation before and after training."""
    distributed: DistributedConfig = DistributedConfig()
    """How many processes train together."""
    seed: int = 0
    """Seed of the cycle's mid-training and distillation (sampling, shuffling, packing)."""
    start: Literal["served", "base"] = "served"
    """Where each night's adapter starts. `served`: the served adapter goes on learning the new
    documents (earlier ones replayed). `base`: a fresh LoRA on every document so far, every
    night something new arrived (as after forgetting): nothing carries over from night to night
    but the documents, so nothing drifts, while mid-training grows with the corpus; the
    `previous` teacher is then the base (the model before this cycle's mid-training), and the
    gate still holds each earlier day's QA to the served adapter's."""

    @model_validator(mode="after")
    def _ranks_fit(self) -> LearnerConfig:
        n = self.distributed.processes
        if n > 1 and self.distill.sampler_url:
            # one vLLM server's runtime adapters are not shared out between ranks (not built)
            raise ValueError("distributed.processes > 1 cannot use distill.sampler_url")
        if n > self.distill.prompts_per_step:
            raise ValueError("distributed.processes must not exceed distill.prompts_per_step")
        return self
