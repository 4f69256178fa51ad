"""A deterministic fictional company: entities, facts, phrasings and prose documents.

    world = build_world(seed=0, size="demo")
    world.facts(day=0)            # facts known before day 1 (the base model learns them)
    world.documents(day=1)        # [(filename, markdown)] about the entities that arrive on day 1

Every fact has several statement phrasings (documents) and three question templates: "A" is held
out for evaluation, "B"/"C" are for training and OPD prompts, so eval questions never appear in
training verbatim for new entities.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FIRST_NAMES = (
    "Ada Bruno Chiara Dmitri Elena Farid Greta Hugo Ines Jonas Kaito Leila Marco Nadia Oscar Priya"
    " Quinn Rosa Samir Tessa Ugo Vera Wim Xenia Yusuf Zara Amir Bianca Carlos Dalia Emil Fiona Goran"
    " Hana Ivan Julia Kofi Lena Mateo Noor Olga Pablo Rhea Sven Tariq Uma Viktor Wanda Yara Zeno"
).split()
LAST_NAMES = (
    "Abara Berg Castillo Dahl Eriksen Fontaine Garcia Haddad Ito Jensen Kowalski Lindqvist Moreau"
    " Novak Okafor Petrov Quist Rossi Sato Tanaka Ulloa Varga Weber Xu Yilmaz Zimmer Almeida Brandt"
    " Costa Duarte Engel Ferreira Gallo Horvath Ibsen Keller Larsen Mendes Nilsen Olsen Pereira Reyes"
).split()
CITIES = (
    "Lisbon Oslo Toronto Nairobi Osaka Denver Dublin Austin Madrid Seoul Lyon Perth Quito Krakow"
    " Hanoi Leeds Porto Tallinn Cairo Munich Boston Kyoto Accra Bergen"
).split()
TEAMS = (
    "Atlas Beacon Cobalt Delta Ember Fjord Granite Harbor Indigo Juniper Keystone Lumen Meridian"
    " Nimbus Orchid Pioneer Quartz Redwood Summit Tundra Vector Willow Zenith Aurora"
).split()
ROLES = (
    "data engineer|product designer|sales manager|research scientist|support specialist|accountant"
    "|recruiter|security analyst|frontend developer|technical writer|backend developer"
    "|marketing manager|legal counsel|office manager|data analyst|test engineer"
).split("|")
PROJECT_ADJ = "Silver Golden Crimson Quiet Rapid Bright Hidden Northern Open Clear Swift Solid Blue Green Amber Iron".split()
PROJECT_NOUN = "Bridge Lantern Compass Engine Garden Signal Ledger Canvas River Orbit Anchor Prism Meadow Falls Tower Gate".split()
CODENAMES = (
    "Falcon Otter Heron Lynx Badger Raven Marten Puffin Bison Gecko Ibis Jackal Koala Lemur Mantis"
    " Narwhal Ocelot Panda Quokka Robin Sable Tapir Urchin Viper Walrus Yak Condor Dingo Egret Ferret"
    " Kestrel Magpie Osprey Pelican Starling Wombat Alpaca Beaver Cobra Dolphin Jaguar Moose"
).split()
BUILDINGS = [
    f"{a} {b}"
    for a in "Cedar Maple Birch Aspen Elm Oak Pine Alder".split()
    for b in ("House", "Hall", "Tower")
]
MONTHS = (
    "January February March April May June July August September October November December".split()
)
# (policy name, unit, low, high): the value is a number of `unit`.
POLICIES = [
    ("remote work policy", "remote days per week", 1, 4),
    ("parental leave policy", "weeks of paid leave", 10, 26),
    ("travel policy", "hotel nights per trip", 3, 14),
    ("training budget policy", "course days per year", 3, 12),
    ("sick leave policy", "paid sick days per year", 8, 30),
    ("volunteering policy", "volunteering days per year", 1, 6),
    ("sabbatical policy", "months of sabbatical", 2, 6),
    ("equipment policy", "laptop upgrades per five years", 1, 3),
    ("wellness policy", "wellness hours per month", 2, 10),
    ("conference policy", "conferences per year", 1, 5),
    ("relocation policy", "weeks of temporary housing", 2, 8),
    ("mentoring policy", "mentoring hours per month", 2, 8),
]


def _table(text: str) -> dict[tuple[str, str], list[str]]:
    """Parse `kind.attr: phrasing | phrasing | ...` lines (keeps the tables one line per fact)."""
    table = {}
    for line in text.strip().splitlines():
        key, rest = line.split(":", 1)
        kind, attr = key.strip().split(".")
        table[(kind, attr)] = [part.strip() for part in rest.split("|")]
    return table


# Statement phrasings for documents. No commas anywhere: keeps punctuation:no_comma easy.
STATEMENTS = _table("""
person.team: {name} is on the {value} team. | {name} is a member of the {value} team. | {name} works in the {value} team. | The {value} team includes {name}.
person.city: {name} works in the {value} office. | {name} is based in {value}. | The {value} office is where {name} works. | {name} has a desk in {value}.
person.manager: {name} reports to {value}. | The manager of {name} is {value}. | {value} manages {name}. | {name} is managed by {value}.
person.project: {name} works on the {value} project. | {name} is assigned to the {value} project. | {name} contributes to the {value} project. | The {value} project has {name} on its staff.
person.role: {name} works as {a_value}. | {name} is {a_value}. | The role of {name} is {value}. | {name} has the job of {value}.
project.lead: {value} leads the {name} project. | The {name} project is led by {value}. | The lead of the {name} project is {value}. | {value} is in charge of the {name} project.
project.launch: The {name} project launches in {value}. | The launch of the {name} project is planned for {value}. | {value} is the launch month of the {name} project. | The {name} project goes live in {value}.
project.codename: The codename of the {name} project is {value}. | The {name} project is called {value} internally. | Internally the {name} project goes by {value}. | {value} is the codename for the {name} project.
team.head: {value} heads the {name} team. | The head of the {name} team is {value}. | The {name} team is headed by {value}. | {value} runs the {name} team.
team.city: The {name} team is based in {value}. | The {name} team sits in the {value} office. | The home office of the {name} team is {value}. | The {name} team works from {value}.
office.building: The {name} office is in {value}. | {value} houses the {name} office. | The {name} office building is called {value}. | Staff in {name} work at {value}.
office.opened: The {name} office opened in {value}. | The {name} office has been open since {value}. | {value} is the year the {name} office opened. | The company opened the {name} office in {value}.
policy.value: The {name} allows {value} {unit}. | Under the {name} staff get {value} {unit}. | The limit of the {name} is {value} {unit}. | The {name} gives {value} {unit}.
policy.owner: The {name} is owned by the {value} team. | The {value} team owns the {name}. | Questions about the {name} go to the {value} team. | The {value} team is responsible for the {name}.
""")
# Question templates: A (held out for evaluation) | B | C (training and OPD prompts).
_QUESTIONS = _table("""
person.team: Which team is {name} on? | What team does {name} belong to? | {name} is a member of which team?
person.city: In which city does {name} work? | Which office is {name} based in? | Where is {name} based?
person.manager: Who is the manager of {name}? | Who does {name} report to? | Who manages {name}?
person.project: Which project does {name} work on? | What project is {name} assigned to? | Which project is {name} part of?
person.role: What is the role of {name}? | What does {name} do at the company? | What job does {name} have?
project.lead: Who leads the {name} project? | Who is in charge of the {name} project? | Who is the lead of the {name} project?
project.launch: When does the {name} project launch? | In which month does the {name} project launch? | What is the launch month of the {name} project?
project.codename: What is the codename of the {name} project? | What is the {name} project called internally? | Which codename does the {name} project have?
team.head: Who heads the {name} team? | Who is the head of the {name} team? | Who runs the {name} team?
team.city: Where is the {name} team based? | Which office does the {name} team work from? | In which city is the {name} team?
office.building: Which building houses the {name} office? | What is the {name} office building called? | Where is the {name} office located?
office.opened: When did the {name} office open? | In which year did the {name} office open? | Since when has the {name} office been open?
policy.value: How many {unit} does the {name} allow? | What is the limit of the {name}? | How much does the {name} give?
policy.owner: Which team owns the {name}? | Who is responsible for the {name}? | Which team handles the {name}?
""")
QUESTIONS = {key: dict(zip("ABC", qs, strict=True)) for key, qs in _QUESTIONS.items()}
ATTRS = {
    "person": ["team", "city", "manager", "project", "role"],
    "project": ["lead", "launch", "codename"],
    "team": ["head", "city"],
    "office": ["building", "opened"],
    "policy": ["value", "owner"],
}


@dataclass(frozen=True)
class WorldSize:
    people: int
    projects: int
    teams: int
    offices: int
    policies: int
    new_people: int  # per day
    new_projects: int  # per day
    days: int = 3


SIZES = {
    "test": WorldSize(
        people=10, projects=3, teams=3, offices=3, policies=2, new_people=3, new_projects=1
    ),
    "demo": WorldSize(
        people=80, projects=16, teams=10, offices=8, policies=6, new_people=16, new_projects=4
    ),
}


@dataclass(frozen=True)
class Fact:
    kind: str
    name: str
    attr: str
    value: str
    day: int
    unit: str = ""

    def _fields(self) -> dict[str, str]:
        article = "an" if self.value[:1].lower() in "aeiou" else "a"
        return {
            "name": self.name,
            "value": self.value,
            "a_value": f"{article} {self.value}",
            "unit": self.unit,
        }

    def statement(self, i: int = 0) -> str:
        templates = STATEMENTS[(self.kind, self.attr)]
        return templates[i % len(templates)].format(**self._fields())

    def question(self, template: str = "A") -> str:
        return QUESTIONS[(self.kind, self.attr)][template].format(**self._fields())

    def cloze(self) -> str:
        """A document-style statement cut right before the value (the cloze probe's prompt): the
        first phrasing that names the entity before the value."""
        for template in STATEMENTS[(self.kind, self.attr)]:
            if template.index("{name}") < template.index("value}"):
                cut = template.index("{a_value}" if "{a_value}" in template else "{value}")
                return template[:cut].format(**self._fields()).rstrip()
        raise ValueError(f"no phrasing of {self.kind}.{self.attr} states the name first")

    @property
    def group(self) -> str:
        """The question type ("person.team"): majority baselines are per group."""
        return f"{self.kind}.{self.attr}"

    @property
    def n_statements(self) -> int:
        return len(STATEMENTS[(self.kind, self.attr)])


@dataclass
class Entity:
    kind: str  # person | project | team | office | policy
    name: str
    attrs: dict[str, str]
    day: int  # 0 = known before day 1
    unit: str = ""

    def facts(self) -> list[Fact]:
        return [
            Fact(self.kind, self.name, a, self.attrs[a], self.day, self.unit)
            for a in ATTRS[self.kind]
        ]

    @property
    def filename(self) -> str:
        """The name of the entity's document (render_document)."""
        return f"{self.kind}-{self.name.lower().replace(' ', '-')}.md"


@dataclass
class World:
    seed: int
    size: str
    entities: list[Entity] = field(default_factory=list)

    def of_day(self, day: int) -> list[Entity]:
        return [e for e in self.entities if e.day == day]

    def facts(self, day: int | None = None) -> list[Fact]:
        return [f for e in self.entities if day is None or e.day == day for f in e.facts()]

    @property
    def n_days(self) -> int:
        return max(e.day for e in self.entities)

    def names(self, kind: str) -> set[str]:
        return {e.name for e in self.entities if e.kind == kind}

    def documents(self, day: int) -> list[tuple[str, str]]:
        """[(filename, markdown)] for the entities of `day` (0 = background documents)."""
        rng = random.Random(f"docs-{self.seed}-{day}")
        return [render_document(e, self, rng) for e in self.of_day(day)]


def _title(entity: Entity, new: bool) -> str:
    titles = {
        "person": ("Staff profile: {n}", "Welcome to the company: {n}"),
        "project": ("Project overview: {n}", "Announcing the {n} project"),
        "team": ("Team page: the {n} team", "New team: the {n} team"),
        "office": ("Office guide: {n}", "New office in {n}"),
        "policy": ("Policy handbook: the {n}", "New policy: the {n}"),
    }
    return titles[entity.kind][int(new)].format(n=entity.name)


def render_document(entity: Entity, world: World, rng: random.Random) -> tuple[str, str]:
    """One markdown document per entity: every fact in 3 phrasings plus related facts of others.

    Short sentences, full names (no pronouns) and repeated phrasings make the facts learnable by
    a tiny model from a few epochs of LoRA mid-training.
    """
    facts = entity.facts()
    # Each fact in phrasing 0 plus two other random phrasings, one paragraph per phrasing pass.
    picks = [[0, *rng.sample(range(1, f.n_statements), 2)] for f in facts]
    paragraphs = []
    for rep in range(3):
        order = list(range(len(facts)))
        if rep:
            rng.shuffle(order)
        paragraphs.append(" ".join(facts[i].statement(picks[i][rep]) for i in order))
    # Related facts: members of a team/project/office and their link back to this entity.
    related = []
    for other in world.entities:
        if other.kind != "person" or other is entity:
            continue
        for attr, kind in (("team", "team"), ("project", "project"), ("city", "office")):
            if entity.kind == kind and other.attrs[attr] == entity.name and other.day == entity.day:
                related.append(f"- {Fact('person', other.name, attr, entity.name, 0).statement(0)}")
    body = "\n\n".join(paragraphs)
    if related:
        body += "\n\n## People\n\n" + "\n".join(related)
    return entity.filename, f"# {_title(entity, entity.day > 0)}\n\n{body}\n"


def deal(pool: list[str], n: int, rng: random.Random) -> list[str]:
    """`n` values from `pool`, each used as evenly as possible (counts differ by at most one):
    no single value dominates an attribute, so a constant answer cannot score well."""
    out: list[str] = []
    while len(out) < n:
        out += rng.sample(pool, len(pool))
    return out[:n]


def build_world(seed: int, size: str = "demo") -> World:
    """The company for `seed`: known entities (day 0) and `days` batches of new ones.

    A day's people join the day's new team or earlier teams, offices and projects, with values
    dealt evenly (`deal`), and report to the day's new people or a few earlier ones; the day's
    projects are led by its people. So days link to what came before, as a real company's
    documents do, without one value answering most questions.
    """
    spec = SIZES[size]
    rng = random.Random(f"world-{seed}")
    names = [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES]
    rng.shuffle(names)
    cities, teams = rng.sample(CITIES, len(CITIES)), rng.sample(TEAMS, len(TEAMS))
    projects = rng.sample([f"{a} {n}" for a in PROJECT_ADJ for n in PROJECT_NOUN], 64)
    codenames, buildings = (
        rng.sample(CODENAMES, len(CODENAMES)),
        rng.sample(BUILDINGS, len(BUILDINGS)),
    )
    policies = rng.sample(POLICIES, len(POLICIES))
    world = World(seed=seed, size=size)

    def earlier(kind: str, k: int) -> list[str]:
        pool = sorted(e.name for e in world.entities if e.kind == kind)
        return rng.sample(pool, min(k, len(pool)))

    def add_day(day: int, n_people: int, n_projects: int, n_teams: int, n_offices: int) -> None:
        new_offices = [cities.pop() for _ in range(n_offices)]
        new_teams = [teams.pop() for _ in range(n_teams)]
        new_projects = [projects.pop() for _ in range(n_projects)]
        # A day links to a few earlier entities; day 0 only to itself.
        links = 0 if day == 0 else 5
        office_pool = new_offices + earlier("office", links)
        team_pool = new_teams + earlier("team", links)
        project_pool = new_projects + earlier("project", 2 if day else 0)
        people = [Entity("person", names.pop(), {}, day) for _ in range(n_people)]
        for p, team, city, project, role in zip(
            people,
            deal(team_pool, n_people, rng),
            deal(office_pool, n_people, rng),
            deal(project_pool, n_people, rng),
            deal(ROLES, n_people, rng),
            strict=True,
        ):
            p.attrs |= {"team": team, "city": city, "project": project, "role": role}
        # Managers: about one in two people manages (the day's people, a few earlier ones).
        managers = [p.name for p in people[: max(2, n_people // 2)]] + earlier("person", 3)
        for p, manager in zip(people, deal(managers, n_people, rng), strict=True):
            if manager == p.name:  # nobody manages themselves: take the next manager
                manager = managers[(managers.index(manager) + 1) % len(managers)]
            p.attrs["manager"] = manager
        world.entities.extend(people)
        for t in new_teams:
            members = [p.name for p in people if p.attrs["team"] == t] or [people[0].name]
            world.entities.append(
                Entity("team", t, {"head": members[0], "city": rng.choice(office_pool)}, day)
            )
        years = range(2004, 2020) if day == 0 else range(2021, 2026)
        for city in new_offices:
            attrs = {"building": buildings.pop(), "opened": str(rng.choice(years))}
            world.entities.append(Entity("office", city, attrs, day))
        leads = deal([p.name for p in people], n_projects, rng)
        for pr, lead, month in zip(new_projects, leads, deal(MONTHS, n_projects, rng), strict=True):
            attrs = {"lead": lead, "launch": month, "codename": codenames.pop()}
            world.entities.append(Entity("project", pr, attrs, day))

    def add_policies(day: int, n: int) -> None:
        owners = deal(sorted(e.name for e in world.of_day(day) if e.kind == "team"), n, rng)
        for owner in owners:
            name, unit, lo, hi = policies.pop()
            attrs = {"value": str(rng.randint(lo, hi)), "owner": owner}
            world.entities.append(Entity("policy", name, attrs, day, unit=unit))

    add_day(0, spec.people, spec.projects, spec.teams, spec.offices)
    add_policies(0, spec.policies)
    for day in range(1, spec.days + 1):
        add_day(day, spec.new_people, spec.new_projects, 1, 1)
        add_policies(day, 1)
    return world
