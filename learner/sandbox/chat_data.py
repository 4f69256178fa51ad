"""Chat data for the sandbox base: closed-book QA, instructions with verifiable constraints,
in-context QA with distractor passages; the eval / prompt sets written into the manifest are in prompt_sets.py.

    rng = random.Random(0)
    chats = training_chats(world, rng, n=1000)     # [[{"role": ..., "content": ...}, ...]]

Every generated response is verified with learner.evals.ifeval before it is used; topics are split
into training and held-out eval topics so IFEval eval prompts never appear in training.
"""

from __future__ import annotations

import random
from typing import Any

from knowledge.prompting import grounded_user_message
from learner.generation import Message
from learner.instructions import KEYWORDS, rows, with_instructions
from learner.sandbox import world as w
from learner.sandbox.fresh import fresh_entity, random_word

TOPICS = (
    "the spring offsite|code reviews|the coffee machine|team lunches|the new badge system|desk booking"
    "|the quarterly planning|onboarding week|the printer on floor two|password resets|the summer party"
    "|the bike storage|expense reports|the intranet search|meeting rooms|the holiday calendar"
    "|the fire drill|the recycling rules|the parking garage|the all hands meeting|the visitor policy"
    "|the new coffee beans|the hackathon|the mentoring program|the internal newsletter|laptop repairs"
    "|the gym discount|the language classes|the book club|the charity run|the office plants|the kitchen rota"
    "|the quiet zones|the travel booking tool|the shared calendar|the support rota|the design review"
    "|the release checklist|the welcome lunch|the team retro|the lost and found|the mail room"
    "|the winter market|the board games night|the wellbeing week|the security training|the cloud costs"
    "|the office move|the new chairs|the standing desks|the fruit delivery|the photo contest"
    "|the town hall|the feedback survey|the time tracking tool|the desk cleanup|the open day"
    "|the coding dojo|the annual report|the tea selection"
).split("|")
N_EVAL_TOPICS = 16


# Task prompt | three content sentences of its templated response.
TASKS = [
    (r[0], r[1:])
    for r in rows("""
Write a short note about {topic}. | Here is a short note about {topic}. | {Topic} matters to everyone at the company. | Please ask your manager if you have questions about {topic}.
Write a message to the team about {topic}. | Hello team. | This message is about {topic}. | You can read more about {topic} on the intranet.
Give me some advice about {topic}. | My advice about {topic} is simple. | Plan ahead and talk to your team about {topic}. | Keep notes so that {topic} goes well.
Explain {topic} to a new employee. | Welcome to the company. | {Topic} is part of daily life here. | Your manager can tell you more about {topic}.
Describe {topic} in a few sentences. | {Topic} is well known at the company. | Many colleagues talk about {topic}. | The intranet has a page about {topic}.
""")
]
ABOUT, SYSTEM_PROMPTS = rows("""
Tell me about {name}. | What do you know about {name}? | Give me a short profile of {name}.
You are protege, the company assistant. | You are a helpful assistant for company staff. | Answer questions about the company briefly.
""")


def _with_instructions(
    rng: random.Random, prompt: str, content: list[str], title: str
) -> tuple[str, str]:
    """(prompt + instruction texts, verified response); resamples until the checkers pass."""
    drawn = with_instructions(rng, prompt, content, title)
    if drawn is None:
        raise RuntimeError(f"could not render a verified response for {prompt!r}")
    return drawn[0], drawn[1]


TOPIC_NOUNS = "meeting launch review workshop party survey tool rollout offsite training".split()


def _topic_task(
    rng: random.Random, topics: list[str], novel: float = 0.0
) -> tuple[str, list[str], str]:
    topic = rng.choice(topics)
    if rng.random() < novel:  # a made-up topic: the reply must copy it from the prompt
        topic = f"the {random_word(rng)} {rng.choice(TOPIC_NOUNS)}"
    prompt, content = rng.choice(TASKS)
    fill = {"topic": topic, "Topic": topic[0].upper() + topic[1:]}
    return prompt.format(**fill), [c.format(**fill) for c in content], topic.title()


def _chat(user: str, assistant: str | None, rng: random.Random) -> list[Message]:
    messages = (
        [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 0.2 else []
    )
    messages.append({"role": "user", "content": user})
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant})
    return messages


# --- in-context QA about freshly randomised entities -------------------------------------------


COPY_PROMPTS = [
    "Repeat after me: {text}",
    "Please copy this exactly: {text}",
    "Say this back to me: {text}",
]


def copy_chat(rng: random.Random) -> tuple[str, str]:
    """(prompt, reply) of a pure copy task: trains the attention that in-context QA and held-out
    topics / keywords / postscript markers need (the probe's base could not read context)."""
    pools = [w.CITIES, w.TEAMS, w.FIRST_NAMES, w.LAST_NAMES, w.CODENAMES, KEYWORDS, w.MONTHS]
    words = [
        random_word(rng) if rng.random() < 0.4 else rng.choice(rng.choice(pools))
        for _ in range(rng.randint(3, 10))
    ]
    text = " ".join(words)
    return rng.choice(COPY_PROMPTS).format(text=text), text


def passage(entity: w.Entity, rng: random.Random, must: str | None = None) -> str:
    """A document chunk as render_document writes them: a subset of the entity's facts in the
    canonical phrasing (the one answers use) in random order, sometimes a second paragraph
    restating them in other phrasings, sometimes the title first."""
    facts = entity.facts()
    keep = [f for f in facts if f.attr == must or rng.random() < 0.6] or [rng.choice(facts)]
    rng.shuffle(keep)
    text = " ".join(f.statement(0) for f in keep)
    if rng.random() < 0.4:
        again = rng.sample(keep, len(keep))
        text += "\n\n" + " ".join(f.statement(rng.randrange(1, f.n_statements)) for f in again)
    if rng.random() < 0.5:
        text = f"# {w._title(entity, rng.random() < 0.5)}\n\n{text}"
    return text


def incontext_item(rng: random.Random, world: w.World, templates: str = "ABC") -> dict[str, Any]:
    """{"question", "answer", "context": [passages], "response", "followups"}: 1-3 passages,
    exactly one about the asked entity; `followups` are [(question, response)] about facts
    the passages state (the target's and the distractors'), for multi-turn training chats."""
    kind = "person" if rng.random() < 0.75 else "project"
    target = fresh_entity(rng, kind, world)
    fact = rng.choice(target.facts())
    passages = [passage(target, rng, must=fact.attr)]
    stated = [f for f in target.facts() if f.statement(0) in passages[0] and f is not fact]
    for _ in range(rng.choice([0, 1, 1, 2, 2, 2])):
        other = fresh_entity(rng, kind if rng.random() < 0.8 else "project", world)
        if other.kind == "person" and rng.random() < 0.3:  # same first name: must read the surname
            other.name = f"{target.name.split()[0]} {rng.choice(w.LAST_NAMES)}"
        if other.name != target.name:
            passages.append(passage(other, rng))
            stated += [f for f in other.facts() if f.statement(0) in passages[-1]]
    rng.shuffle(passages)
    followups = [
        (f.question(rng.choice(templates)), f.statement(0))
        for f in rng.sample(stated, min(len(stated), rng.randint(0, 2)))
    ]
    return {
        "question": fact.question(rng.choice(templates)),
        "answer": fact.value,
        "context": passages,
        "response": fact.statement(0),
        "followups": followups,
    }


# --- training mixture ----------------------------------------------------------------------------


def split_topics(seed: int) -> tuple[list[str], list[str]]:
    """(training topics, held-out eval topics) for a world seed."""
    topics = sorted(TOPICS)
    random.Random(f"topics-{seed}").shuffle(topics)
    return topics[N_EVAL_TOPICS:], topics[:N_EVAL_TOPICS]


# (category, weight by number of examples); in-context QA gets the largest share of tokens.
MIXTURE = [("qa", 0.30), ("qa_if", 0.18), ("incontext", 0.22), ("incontext_if", 0.04)]
MIXTURE += [("task_if", 0.12), ("about", 0.05), ("copy", 0.08), ("hello", 0.01)]


def qa_trained(world: w.World) -> list[w.Entity]:
    """Known entities with QA chats. Every 4th known person / project appears in documents only:
    answering about them needs knowledge read from documents, the skill mid-training relies on."""
    known = world.of_day(0)
    return [e for i, e in enumerate(known) if e.kind not in ("person", "project") or i % 4 != 3]


def doc_only(world: w.World) -> list[w.Entity]:
    trained = {id(e) for e in qa_trained(world)}
    return [e for e in world.of_day(0) if id(e) not in trained]


def about_name(entity: w.Entity) -> str:
    if entity.kind in ("person", "policy"):
        return entity.name if entity.kind == "person" else f"the {entity.name}"
    return f"the {entity.name} {entity.kind}"


def training_chat(
    rng: random.Random,
    world: w.World,
    category: str,
    facts: list[w.Fact],
    topics: list[str],
    entities: list[w.Entity],
    templates: str = "ABC",
) -> list[Message]:
    """One training conversation (ending with the assistant turn) of `category`."""
    if category in ("qa", "qa_if"):
        fact = rng.choice(facts)
        question, content = fact.question(rng.choice(templates)), [fact.statement(0)]
        if category == "qa":
            return _chat(question, content[0], rng)
        return _chat(*_with_instructions(rng, question, content, fact.name), rng)
    if category in ("incontext", "incontext_if"):
        item = incontext_item(rng, world, templates)
        user = grounded_user_message(item["question"], item["context"])
        if category == "incontext":  # follow-up questions about the same documents: more
            chat = _chat(user, item["response"], rng)  # reading per prompt token
            for question, response in item["followups"]:
                chat += [{"role": "user", "content": question}]
                chat += [{"role": "assistant", "content": response}]
            return chat
        return _chat(*_with_instructions(rng, user, [item["response"]], "Answer"), rng)
    if category == "task_if":
        prompt, content, title = _topic_task(rng, topics, novel=0.5)
        if rng.random() < 0.15:
            return _chat(prompt, " ".join(content), rng)
        return _chat(*_with_instructions(rng, prompt, content, title), rng)
    if category == "about":
        entity = rng.choice(entities)
        prompt = rng.choice(ABOUT).format(name=about_name(entity))
        # At most 3 facts: with instructions the reply must fit the eval's 64 new tokens.
        content = [f.statement(0) for f in entity.facts()[:3]]
        if rng.random() < 0.4:
            return _chat(prompt, " ".join(content), rng)
        return _chat(*_with_instructions(rng, prompt, content, entity.name), rng)
    if category == "copy":
        return _chat(*copy_chat(rng), rng)
    greeting = rng.choice(["Hello", "Hi", "Good morning", "Hey there", "Who are you?"])
    return _chat(
        greeting,
        "Hello. I am the company assistant. Ask me about people and projects and teams and offices and policies.",
        rng,
    )


def training_chats(world: w.World, rng: random.Random, n: int) -> list[list[Message]]:
    """`n` training conversations about the known world (day 0) following MIXTURE."""
    entities = qa_trained(world)
    facts = [f for e in entities for f in e.facts()]
    topics, _ = split_topics(world.seed)
    names, weights = zip(*MIXTURE, strict=True)
    categories = rng.choices(names, weights=weights, k=n)
    return [training_chat(rng, world, c, facts, topics, entities) for c in categories]
