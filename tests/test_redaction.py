"""The redactor (learner/redaction.py) on a fixture of tricky strings, and conversation prompts.

.venv/bin/python -m pytest tests/test_redaction.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session

from knowledge.db import open_database
from knowledge.settings import Settings
from knowledge.tables import Exchange
from learner.datasets import conversation_prompts
from learner.redaction import iban_ok, luhn_ok, redact, redact_report

# (text, redacted): each must be replaced.
REDACTED = [
    ("mail ana.lopez+hr@acme-corp.co.uk today", "mail [EMAIL] today"),
    ("Ana <ana@acme.com>, bo@x.io", "Ana <[EMAIL]>, [EMAIL]"),
    ("call +44 20 7946 0958.", "call [PHONE]."),
    ("phone +1 (415) 555-0132", "phone [PHONE]"),
    ("(415) 555-0132 or 415.555.0132", "[PHONE] or [PHONE]"),
    ("mobil 0151 2345 6789", "mobil [PHONE]"),
    ("+4915123456789", "[PHONE]"),
    ("visa 4111 1111 1111 1111 exp 12/27", "visa [CARD] exp 12/27"),
    ("card=4111-1111-1111-1111", "card=[CARD]"),
    ("mc 5555555555554444", "mc [CARD]"),
    ("amex 3782 822463 10005", "amex [CARD]"),
    ("IBAN DE89 3704 0044 0532 0130 00.", "IBAN [IBAN]."),
    ("pay to GB82WEST12345698765432", "pay to [IBAN]"),
    ("account number: 0012345678", "account number: [ACCOUNT]"),
    ("acct #98765432 and routing 021000021", "acct #[ACCOUNT] and routing [ACCOUNT]"),
    ("key sk-proj-abcDEF1234567890abcdef please", "key [SECRET] please"),
    ("OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx", "OPENAI_API_KEY=[SECRET]"),
    ("token ghp_" + "a1B2" * 9, "token [SECRET]"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "[SECRET]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws [SECRET]"),
    ("slack xoxb-123456789012-abcdefABCDEF", "slack [SECRET]"),
    ("google AIzaSyA1234567890abcdefghijklmnopqrstuv", "google [SECRET]"),
    ("Authorization: Bearer abcdefghijklmnop1234", "Authorization: Bearer [SECRET]"),
    ("password: hunter2!!", "password: [SECRET]"),
    ('{"client_secret": "s3cr3tValue"}', '{"client_secret": "[SECRET]"}'),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "jwt [SECRET]",
    ),
    ("sig 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "sig [SECRET]"),
    ("blob wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY1234", "blob [SECRET]"),
]

# Must come back unchanged.
KEPT = [
    "Released v2.14.3 on 2026-11-25 at 14:30.",
    "Meeting 25.11.2026 14:30-15:00, room 4-112.",
    "Upgrade to 1.0.0-rc.1 or 2026.11.25 builds.",
    "Order ORD-2024-000123 and ticket #48213 shipped.",
    "Invoice 12345678 totals 1,234,567.89 EUR.",
    "Card ending 4242 was charged.",
    "Test number 4111 1111 1111 1112 fails Luhn.",
    "Request 123e4567-e89b-12d3-a456-426614174000 failed.",
    "Hosts 10.0.0.1 and 192.168.100.200 are up.",
    "ISO 9001:2015 and EN 1090-2 apply; call ext. 4123.",
    "Pneumonoultramicroscopicsilicovolcanoconiosis is a long word.",
    "Sections 3.2.1-3.2.4 and pages 12-18.",
    "The ratio was 3.14159265358979 at 20:15:30.",
    "Reach us at the front desk (building B).",
    "DE12 is a region code, not an IBAN.",
]


@pytest.mark.parametrize(("text", "expected"), REDACTED)
def test_redacts(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_keeps_false_positives(text: str) -> None:
    assert redact(text) == text


def test_checksums_and_counts() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE88 3704 0044 0532 0130 00")
    report = redact_report("ana@acme.com, bo@acme.com, +44 20 7946 0958, AKIAIOSFODNN7EXAMPLE")
    assert report.counts == {"EMAIL": 2, "PHONE": 1, "SECRET": 1}
    assert redact(redact("ana@acme.com")) == "[EMAIL]"  # idempotent


def test_conversation_prompts_are_redacted_user_turns(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    chats = [
        [
            {"role": "system", "content": "Context: [restricted chunk] payroll@acme.com"},
            {
                "role": "user",
                "content": "My card 4111 1111 1111 1111 was declined, mail ana@acme.com",
            },
        ],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello, call +44 20 7946 0958"},
            {"role": "user", "content": "key sk-abcdefghijklmnopqrstuvwx?"},
        ],
        [{"role": "system", "content": "only a system turn"}],
    ]
    with Session(open_database(settings.db_url)) as session:
        for messages in chats:
            session.add(
                Exchange(
                    user="ana", messages_json=json.dumps(messages), answer="ok",
                    adapter_version="base", latency_ms=1.0,
                )
            )  # fmt: skip
        session.commit()
    assert conversation_prompts(settings) == [
        [{"role": "user", "content": "My card [CARD] was declined, mail [EMAIL]"}],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello, call [PHONE]"},
            {"role": "user", "content": "key [SECRET]?"},
        ],
    ]
