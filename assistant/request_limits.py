"""Caps on what one chat, completion or tokenize request may ask for (issue 11).

    stops = checked_stops(settings, body.stop)          # tuple; TooLargeError past the caps
    check_chars(settings, texts, "the chat messages")   # before tokenizing or embedding
    check_prompts(settings, prompts)                    # token-id prompts of /v1/completions
    kwargs = checked_template_kwargs(body.chat_template_kwargs)   # /tokenize

Each refusal is a TooLargeError (413) or BadInputError (400) whose message names the setting;
sizes are checked on characters before any tokenizer runs, so an oversized prompt is refused in
microseconds instead of after seconds of tokenizing (a 2 MB prompt froze /healthz for 4-5 s).
Settings: `serving.max_prompt_chars`, `max_messages`, `max_prompts_per_request`,
`max_tokens_per_request`, `max_stop_strings`, `max_stop_chars` (README, "Limits").
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from knowledge.errors import BadInputError, TooLargeError
from knowledge.settings import Settings

MAX_TEMPLATE_KWARGS = 16
# apply_chat_template's own parameters: set through chat_template_kwargs they would collide with
# ours (TypeError: a 500) or swap in another template (arbitrary Jinja, a CPU bomb).
_RESERVED = frozenset(inspect.signature(PreTrainedTokenizerBase.apply_chat_template).parameters) - {
    "self",
    "kwargs",
}


def checked_stops(settings: Settings, stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """The request's non-empty stop strings, within `max_stop_strings` x `max_stop_chars`."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    serving = settings.serving
    if len(stops) > serving.max_stop_strings:
        raise TooLargeError(
            f"{len(stops):,} stop strings; at most {serving.max_stop_strings} "
            "(serving.max_stop_strings)"
        )
    if any(len(s) > serving.max_stop_chars for s in stops):
        raise TooLargeError(
            f"a stop string is longer than {serving.max_stop_chars} characters "
            "(serving.max_stop_chars)"
        )
    return tuple(s for s in stops if s)


def check_chars(settings: Settings, texts: Iterable[str], what: str) -> None:
    """Refuse more than `serving.max_prompt_chars` characters in `texts` together."""
    limit = settings.serving.max_prompt_chars
    total = 0
    for text in texts:
        total += len(text)
        if total > limit:
            raise TooLargeError(
                f"{what} hold more than {limit:,} characters (serving.max_prompt_chars)"
            )


def check_messages(settings: Settings, count: int) -> None:
    limit = settings.serving.max_messages
    if count > limit:
        raise TooLargeError(f"{count:,} messages; at most {limit} (serving.max_messages)")


def check_prompt_count(settings: Settings, count: int) -> None:
    limit = settings.serving.max_prompts_per_request
    if count > limit:
        raise TooLargeError(
            f"{count:,} prompts in one request; at most {limit} (serving.max_prompts_per_request)"
        )


def check_prompts(settings: Settings, prompts: Sequence[Sequence[int]]) -> None:
    """Prompt count and total prompt tokens of one request."""
    check_prompt_count(settings, len(prompts))
    limit = settings.serving.max_tokens_per_request
    total = sum(len(p) for p in prompts)
    if total > limit:
        raise TooLargeError(
            f"{total:,} prompt tokens in one request; at most {limit:,} "
            "(serving.max_tokens_per_request)"
        )


def checked_template_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`chat_template_kwargs` as template variables only: few, scalar, not the call's own."""
    if len(kwargs) > MAX_TEMPLATE_KWARGS:
        raise BadInputError(f"at most {MAX_TEMPLATE_KWARGS} chat_template_kwargs")
    reserved = sorted(set(kwargs) & _RESERVED)
    if reserved:
        raise BadInputError(
            f"chat_template_kwargs may not set {', '.join(reserved)}: those are the tokenize "
            "call's own parameters; only template variables (such as enable_thinking) are allowed"
        )
    odd = sorted(k for k, v in kwargs.items() if not isinstance(v, str | int | float | bool | None))
    if odd:
        raise BadInputError(
            f"chat_template_kwargs values must be strings, numbers, booleans or null: {odd}"
        )
    return kwargs
