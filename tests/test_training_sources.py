"""What a cycle may train on: `learner.sources`, conversations and the per-user opt-out.

.venv/bin/python -m pytest tests/test_training_sources.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session

from knowledge.db import open_database
from knowledge.errors import ConfigError, NothingToTrainError
from knowledge.optout import set_training_opt_out
from knowledge.settings import (
    DistillConfig,
    LearnerConfig,
    MidtrainConfig,
    ModelsConfig,
    Settings,
    SourcesConfig,
)
from knowledge.tables import Exchange
from learner.datasets import conversation_prompts, eligible_documents, training_prompts


def _settings(tmp_path: Path, db_url: str, **sources: bool) -> Settings:
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"prompt": "Tell me about the canteen."}) + "\n")
    opd = tmp_path / "opd.jsonl"
    opd.write_text("".join(json.dumps({"prompt": f"Answer in {n} words."}) + "\n" for n in (3, 5)))
    return Settings(
        home=tmp_path,
        database_url=db_url,
        models=ModelsConfig(student="my-org/student"),  # not the sandbox: the files above count
        learner=LearnerConfig(
            sources=SourcesConfig(**sources),
            midtrain=MidtrainConfig(chat_prompts_file=str(chat)),
            distill=DistillConfig(prompts_file=str(opd)),
        ),
    )


def _chat(db_url: str, user: str | None, question: str) -> None:
    with Session(open_database(db_url)) as session:
        session.add(
            Exchange(
                user=user, messages_json=json.dumps([{"role": "user", "content": question}]),
                answer="...", adapter_version="base", latency_ms=1.0,
            )
        )  # fmt: skip
        session.commit()


def test_opted_out_and_anonymous_conversations_are_left_out(tmp_path: Path, db_url: str) -> None:
    settings = _settings(tmp_path, db_url)
    _chat(db_url, "ana", "Where is the Lisbon office? Mail me at ana@acme.com")
    _chat(db_url, "bo", "What is my salary?")
    _chat(db_url, None, "Anonymous question")
    _chat(db_url, "ana", "And the Porto office?")
    set_training_opt_out(open_database(db_url), "bo", True)
    assert conversation_prompts(settings) == [
        [{"role": "user", "content": "Where is the Lisbon office? Mail me at [EMAIL]"}],
        [{"role": "user", "content": "And the Porto office?"}],
    ]
    set_training_opt_out(open_database(db_url), "ana", True)
    set_training_opt_out(open_database(db_url), "bo", False)
    assert conversation_prompts(settings) == [[{"role": "user", "content": "What is my salary?"}]]


def test_sources_decide_the_prompts(tmp_path: Path, db_url: str) -> None:
    _chat(db_url, "ana", "Where is the Lisbon office?")
    default = training_prompts(_settings(tmp_path, db_url))  # conversations are off by default
    assert default.sources == {"prompt_files": 3}
    assert [p[0]["content"] for p in default.chat] == ["Tell me about the canteen."]
    assert [p[0]["content"] for p in default.opd] == ["Answer in 3 words.", "Answer in 5 words."]

    both = training_prompts(_settings(tmp_path, db_url, conversations=True))
    assert both.sources == {"prompt_files": 3, "conversations": 1}
    assert both.opd[-1] == [{"role": "user", "content": "Where is the Lisbon office?"}]
    assert both.chat == default.chat  # conversations feed OPD only

    only = training_prompts(_settings(tmp_path, db_url, conversations=True, prompt_files=False))
    assert only.sources == {"conversations": 1}
    assert (only.chat, only.opd) == (
        [],
        [[{"role": "user", "content": "Where is the Lisbon office?"}]],
    )

    with pytest.raises(ConfigError, match="no OPD prompts"):
        training_prompts(_settings(tmp_path, db_url, prompt_files=False))


def test_documents_off_skips_the_cycle(tmp_path: Path) -> None:
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'p.db'}", documents=False)
    with pytest.raises(NothingToTrainError, match="learner.sources.documents is off"):
        eligible_documents(settings, store=None, exclude_ids=[])  # the store is never asked


def test_background_documents_are_replayed_from_their_folder(tmp_path: Path, db_url: str) -> None:
    settings = _settings(tmp_path, db_url)
    assert training_prompts(settings).documents == []  # not the sandbox, none configured
    folder = tmp_path / "background"
    folder.mkdir()
    (folder / "a.md").write_text("# Canteen\nThe canteen opens at 8.")
    (folder / "b.txt").write_text("Parking is free.")
    (folder / "c.json").write_text("{}")  # not a text document: left out
    settings.learner.midtrain.background_documents_dir = str(folder)
    prompts = training_prompts(settings)
    assert prompts.documents == ["# Canteen\nThe canteen opens at 8.", "Parking is free."]
    assert prompts.sources == {"prompt_files": 5}
    settings.learner.midtrain.background_documents_dir = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="background documents folder"):
        training_prompts(settings)
