"""What a night replays: earlier nights' and the background's material, pooled or per night."""

from collections import Counter

from knowledge.settings import MidtrainConfig, Settings
from learner.qa_pairs import QAPair
from learner.registry import BASE, Registry
from learner.replay import replay_material, replay_pool


def test_pooled_joins_and_per_night_draws_every_group_equally():
    small, large = ["a", "b"], [f"x{i}" for i in range(6)]
    assert replay_pool([small, [], large], "pooled") == small + large
    pool = replay_pool([small, [], large], "per_night")
    counts = Counter("small" if x in small else "large" for x in pool)
    assert counts == {"small": 6, "large": 6}  # a uniform draw picks each group half the time
    assert set(pool) == set(small + large)
    assert replay_pool([[], []], "per_night") == []


def test_replay_material_groups_by_night_and_skips_documents_without_text():
    pairs_of = {i: [QAPair(f"q{i}", f"a{i}", f"a{i}")] for i in (1, 2, 3)}
    texts = {1: "day one", 2: "day two"}  # 3 was deleted since
    cfg = MidtrainConfig(replay_balance="per_night")
    background = [f"bg{i}" for i in range(4)]
    bg_pairs = [QAPair(f"bq{i}", f"ba{i}", f"ba{i}") for i in range(4)]
    docs, pairs = replay_material(cfg, [[1], [2, 3]], texts, pairs_of, background, bg_pairs)
    assert Counter(docs) == {"day one": 4, "day two": 4, **{b: 1 for b in background}}
    assert Counter(p.question for p in pairs)["q1"] == 4 and "q3" not in {p.question for p in pairs}
    pooled = MidtrainConfig(replay_balance="pooled")
    docs, pairs = replay_material(pooled, [[1], [2, 3]], texts, pairs_of, background, bg_pairs)
    assert docs == ["day one", "day two", *background] and len(pairs) == 6


def test_documents_by_night_follows_the_lineage(tmp_path):
    registry = Registry(Settings(home=tmp_path))

    def register(version, parent, docs):  # noqa: ANN001, ANN202
        def save(folder):  # noqa: ANN001, ANN202
            (folder / "adapter_config.json").write_text("{}")

        registry.register(
            version, save, parent_version=parent, base_model="m", config={},
            documents=docs, metrics={},
        )  # fmt: skip

    register("v0001", None, [1, 2])
    register("v0002", "v0001", [1, 2, 3])
    register("v0003", "v0002", [1, 2, 3, 4, 5])
    register("v0004", None, [1, 2, 3, 4, 5, 6])  # a rebuild from the base: one night
    assert registry.documents_by_night(BASE) == []
    assert registry.documents_by_night("v0003") == [[1, 2], [3], [4, 5]]
    assert registry.documents_by_night("v0004") == [[1, 2, 3, 4, 5, 6]]
