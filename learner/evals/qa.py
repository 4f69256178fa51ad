"""Closed-book / in-context QA scoring: normalised containment of the answer in the prediction.

qa_correct("Nora Vance works in the Lisbon office.", "Lisbon")  # True
qa_correct("It launches in 2013.", "13")                         # False: whole words only
"""

from __future__ import annotations

import re
import string

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str) -> str:
    """Lowercase, punctuation to spaces, drop articles, collapse whitespace (SQuAD-style)."""
    text = _PUNCT.sub(" ", text.lower())
    words = [w for w in text.split() if w not in {"a", "an", "the"}]
    return " ".join(words)


def qa_correct(prediction: str, answer: str) -> bool:
    """Whether the normalised answer occurs in the normalised prediction as whole words."""
    want = normalize(answer)
    if not want:
        return False
    return f" {want} " in f" {normalize(prediction)} "
