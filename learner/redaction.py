"""Redact personal data and secrets from text before any training use.

    from learner.redaction import redact, redact_report
    redact("mail ana@acme.com or +44 20 7946 0958")   # -> "mail [EMAIL] or [PHONE]"
    redact_report(text).counts                          # -> {"EMAIL": 1, "PHONE": 1}

What is replaced, and by what (in this order: secrets first, so a token holding digits is never
half-eaten by the card or phone rules):

| kind      | examples                                                        | replaced by |
|-----------|-----------------------------------------------------------------|-------------|
| SECRET    | `sk-...`, `sk-proj-...`, `ghp_...`/`github_pat_...`, `AKIA...`,  | `[SECRET]`  |
|           | `xox?-...` (Slack), `AIza...` (Google), JWTs (`eyJ...x.y.z`),     |             |
|           | `Bearer <token>`, `password=...`/`api_key: ...` values,          |             |
|           | hex runs of 32+ chars, base64 runs of 40+ mixing cases and digits |             |
| EMAIL     | `first.last+tag@mail.example.co.uk`                              | `[EMAIL]`   |
| IBAN      | `DE89 3704 0044 0532 0130 00` (mod-97 checksum must hold)        | `[IBAN]`    |
| CARD      | 13-19 digits, spaces/dashes allowed, Luhn checksum must hold     | `[CARD]`    |
| ACCOUNT   | digits after "account (no/number/#)", "acct", "a/c", "routing"   | `[ACCOUNT]` |
| PHONE     | `+` and 8-15 digits (`+1 (415) 555-0132`), `(415) 555-0132`,     | `[PHONE]`   |
|           | `415-555-0132`, `0151 2345 6789`-style national numbers          |             |

What stays (false positives the checksums and shapes rule out; tests/test_redaction.py holds a
fixture of them): dates and times (`2026-11-25`, `25.11.2026 14:30`), version numbers
(`v2.14.3`, `1.0.0-rc.1`), IP addresses, order/ticket ids (`ORD-2024-000123`, `#48213`), a card's
last four digits, card-like numbers failing Luhn, UUIDs, amounts, ordinary long words.

It is a pattern redactor: it catches the formats above, not names or free-text addresses, and a
number that happens to pass Luhn is redacted even when it was an order number (erring safe).
Tests: .venv/bin/python -m pytest tests/test_redaction.py -q
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Redaction:
    text: str
    counts: Counter = field(default_factory=Counter)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616 mod-97: move the first four characters to the end, letters to 10..35."""
    s = iban.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _base64_secret(m: re.Match) -> bool:
    s = m.group(0)
    # Long runs mixing upper, lower and digits look like keys; long words or numbers do not.
    return bool(re.search(r"[A-Z]", s) and re.search(r"[a-z]", s) and re.search(r"\d", s))


def _card(m: re.Match) -> bool:
    digits = _digits(m.group(0))
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _phone(m: re.Match) -> bool:
    return 8 <= len(_digits(m.group(0))) <= 15


_Rule = tuple[
    str, re.Pattern, Callable[[re.Match], bool] | None, int
]  # kind, pattern, check, group

RULES: list[_Rule] = [
    # -- secrets ------------------------------------------------------------------------------
    ("SECRET", re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}"), None, 0),  # JWT
    ("SECRET", re.compile(r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{16,}"), None, 0),
    ("SECRET", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{22,})"), None, 0),
    ("SECRET", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), None, 0),
    ("SECRET", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), None, 0),
    ("SECRET", re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), None, 0),
    ("SECRET", re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{16,}=*)"), None, 1),
    (
        "SECRET",
        re.compile(
            r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|token|client[_-]?secret)"
            r"[\"']?\s*[:=]\s*[\"']?([^\s\"',;]{6,})"
        ),
        None,
        1,
    ),
    ("SECRET", re.compile(r"(?<![\w-])[0-9a-fA-F]{32,}(?![\w-])"), None, 0),
    ("SECRET", re.compile(r"(?<![\w+/])[A-Za-z0-9+/_-]{40,}={0,2}"), _base64_secret, 0),
    # -- personal data ------------------------------------------------------------------------
    (
        "EMAIL",
        re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
        None,
        0,
    ),
    (
        "IBAN",
        re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
        lambda m: iban_ok(m.group(0)),
        0,
    ),
    ("CARD", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card, 0),
    (
        "ACCOUNT",
        re.compile(
            r"(?i)\b(?:account|acct|a/c|routing)(?:\s*(?:no\.?|number|num|#))?\s*[:#]?\s*"
            r"(\d[\d -]{4,}\d)"
        ),
        None,
        1,
    ),
    (
        "PHONE",
        re.compile(
            r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}\b"
        ),
        _phone,
        0,
    ),
    ("PHONE", re.compile(r"(?<![\w.-])\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}\b"), None, 0),
    ("PHONE", re.compile(r"(?<![\w.-])\d{3}[.-]\d{3}[.-]\d{4}(?![\w.-])"), None, 0),
    ("PHONE", re.compile(r"(?<![\w.-])0\d{2,4} \d{3,4} ?\d{3,4}(?![\w.-])"), _phone, 0),
]


def redact_report(text: str) -> Redaction:
    """The redacted text and how many of each kind were replaced."""
    counts: Counter = Counter()
    for kind, pattern, check, group in RULES:

        def replace(m: re.Match, kind: str = kind, check=check, group: int = group) -> str:  # noqa: ANN001
            if check is not None and not check(m):
                return m.group(0)
            counts[kind] += 1
            whole, start, end = m.group(0), m.start(group) - m.start(), m.end(group) - m.start()
            return whole[:start] + f"[{kind}]" + whole[end:]

        text = pattern.sub(replace, text)
    return Redaction(text, counts)


def redact(text: str) -> str:
    """`text` with emails, phones, card/IBAN/account numbers and secrets replaced by `[KIND]`."""
    return redact_report(text).text
