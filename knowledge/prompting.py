"""How retrieved passages are put in front of the model: one format everywhere.

The sandbox pre-trains its base on in-context QA in exactly this format, the assistant uses it for
grounded answers, and the privileged-context teacher uses it too, so the model reads context the
way it was taught to.
"""

from __future__ import annotations


def grounded_user_message(question: str, passages: list[str]) -> str:
    """The user turn for a question answered from passages (`[1] ...` numbered, for citations)."""
    if not passages:
        return question
    numbered = "\n".join(f"[{i}] {passage.strip()}" for i, passage in enumerate(passages, start=1))
    return f"Documents:\n{numbered}\n\nQuestion: {question}"
