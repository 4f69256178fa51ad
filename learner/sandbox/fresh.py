"""Freshly randomised entities for in-context QA: not in the world, so only the passage can answer.

entity = fresh_entity(random.Random(0), "person", build_world(0))
"""

from __future__ import annotations

import random

from learner.sandbox import world as w

_SYLLABLES = "ka ro mi te lu va zen dor fi po sha ni bel tor qui ra mo su vek lan di go".split()


def random_word(rng: random.Random) -> str:
    """A made-up capitalised word: never memorisable, so it can only be copied from context."""
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _person_name(rng: random.Random) -> str:
    last = random_word(rng) if rng.random() < 0.3 else rng.choice(w.LAST_NAMES)
    return f"{rng.choice(w.FIRST_NAMES)} {last}"


def fresh_entity(rng: random.Random, kind: str, world: w.World) -> w.Entity:
    """A random entity that is not in the world (so only the passage can answer); some names and
    values are made-up words, which forces reading the passage rather than guessing."""
    taken = world.names(kind)
    while True:
        name = _person_name(rng)
        if kind == "project":
            name = f"{rng.choice(w.PROJECT_ADJ + [random_word(rng)])} {rng.choice(w.PROJECT_NOUN)}"
        if name not in taken:
            break
    project = f"{rng.choice(w.PROJECT_ADJ + [random_word(rng)])} {rng.choice(w.PROJECT_NOUN)}"
    if kind == "person":
        attrs = {
            "team": rng.choice(w.TEAMS),
            "city": rng.choice(w.CITIES),
            "manager": _person_name(rng),
        }
        attrs |= {"project": project, "role": rng.choice(w.ROLES)}
    else:
        codename = random_word(rng) if rng.random() < 0.5 else rng.choice(w.CODENAMES)
        attrs = {"lead": _person_name(rng), "launch": rng.choice(w.MONTHS), "codename": codename}
    return w.Entity(kind, name, attrs, day=-1)
