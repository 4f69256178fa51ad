"""The sandbox's eval and prompt files: QA items, IFEval items, chat and OPD prompts.

    items = ifeval_items(world, day=1, rng=random.Random(0), n=100)            # held out
    train = ifeval_items(world, 0, random.Random(1), n=500, held_out=False)   # RL prompts

IFEval eval prompts use the held-out topics and A-template questions; every training prompt
uses the training topics and B/C templates, so no eval prompt is ever trained on.
"""

from __future__ import annotations

import random
from typing import Any

from learner.generation import Message
from learner.instructions import instruction_texts, sample_instructions
from learner.sandbox import world as w
from learner.sandbox.chat_data import (
    ABOUT,
    MIXTURE,
    _chat,
    _topic_task,
    _with_instructions,
    about_name,
    qa_trained,
    split_topics,
    training_chat,
)


def qa_items(facts: list[w.Fact], templates: str, set_name: str = "") -> list[dict[str, str]]:
    """{"question", "answer", "group"[, "set"]} for every fact in every template of `templates`;
    `group` is the question type (majority baselines are per group), `set` the eval set (a day)."""
    extra = {"set": set_name} if set_name else {}
    return [
        {"question": f.question(t), "answer": f.value, "group": f.group, **extra}
        for f in facts
        for t in templates
    ]


def train_qa_items(entities: list[w.Entity]) -> list[dict[str, str]]:
    """Training QA pairs: the B/C questions with the answer as the base was taught to say it, and
    the document (`doc`, a file name) that states the fact."""
    return [
        {
            "question": f.question(t),
            "answer": f.value,
            "response": f.statement(0),
            "doc": e.filename,
        }
        for e in entities
        for f in e.facts()
        for t in "BC"
    ]


def cloze_items(facts: list[w.Fact], set_name: str) -> list[dict[str, str]]:
    """{"prompt", "answer", "group", "set"}: document-style prefixes the model should complete."""
    return [
        {"prompt": f.cloze(), "answer": f.value, "group": f.group, "set": set_name} for f in facts
    ]


def ifeval_items(
    world: w.World, day: int, rng: random.Random, n: int, held_out: bool = True
) -> list[dict[str, Any]]:
    """Held-out IFEval items: eval topics + A-template questions about the day's entities.
    With `held_out=False`: training topics and B-template questions (RL prompts, never eval)."""
    train_topics, eval_topics = split_topics(world.seed)
    topics, template = (eval_topics, "A") if held_out else (train_topics, "B")
    facts, entities = world.facts(day), world.of_day(day)
    items = []
    while len(items) < n:
        roll = rng.random()
        if roll < 0.5:
            prompt = _topic_task(rng, topics)[0]
        elif roll < 0.8:
            prompt = rng.choice(facts).question(template)
        else:
            e = rng.choice(entities)
            prompt = rng.choice(ABOUT).format(name=about_name(e))
        instrs = sample_instructions(rng)
        items.append(
            {
                "key": 1000 * day + len(items),
                "prompt": f"{prompt} {instruction_texts(instrs, rng)}",
                "instruction_id_list": [i for i, _ in instrs],
                "kwargs": [kw for _, kw in instrs],
            }
        )
    return items


def prompt_messages(chats: list[list[Message]]) -> list[dict[str, list[Message]]]:
    """Drop the final assistant turn: {"messages": [...]} prompts for sampling (a multi-turn
    chat keeps its earlier answers, so it never becomes consecutive user turns)."""
    return [{"messages": c[:-1] if c and c[-1]["role"] == "assistant" else c} for c in chats]


def chat_prompts(world: w.World, rng: random.Random, n: int) -> list[dict[str, list[Message]]]:
    """General chat prompts (training distribution, B/C questions only) for background replay."""
    entities, topics = qa_trained(world), split_topics(world.seed)[0]
    facts = [f for e in entities for f in e.facts()]
    names, weights = zip(*MIXTURE, strict=True)
    categories = rng.choices(names, weights=weights, k=n)
    chats = [training_chat(rng, world, c, facts, topics, entities, "BC") for c in categories]
    return prompt_messages(chats)


def opd_prompts(world: w.World, rng: random.Random, n: int) -> list[dict[str, list[Message]]]:
    """Instruction prompts (training topics) and B/C questions about known entities, some with
    constraints; disjoint from every eval prompt."""
    facts, topics = [f for e in qa_trained(world) for f in e.facts()], split_topics(world.seed)[0]
    chats = []
    for i in range(n):
        if i % 3 == 0:
            prompt, content, title = _topic_task(rng, topics)
            user, _ = _with_instructions(rng, prompt, content, title)
        else:
            fact = rng.choice(facts)
            user = fact.question(rng.choice("BC"))
            if i % 3 == 1:
                user, _ = _with_instructions(rng, user, [fact.statement(0)], fact.name)
        chats.append(_chat(user, None, rng))
    return [{"messages": c} for c in chats]
