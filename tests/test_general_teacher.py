"""OPD's general prompts scored by the raw base beside another teacher (`models.general_teacher`)."""

import torch
from test_opd import PROMPTS, _RecordingSampler, _student, tiny  # noqa: F401 (fixture)

from knowledge.settings import DistillConfig, Settings, load_settings
from learner import distill
from learner.teachers.base import BaseModelTeacher
from learner.teachers.factory import general_teacher


class _ConstTeacher:
    """Scores every completion token `value` (0 outside completions, as teachers do)."""

    def __init__(self, value: float) -> None:
        self.value, self.name = value, f"const {value}"

    def logprobs(self, batch):  # noqa: ANN001, ANN201
        return torch.where(batch.completion_mask_B_T, self.value, 0.0)


def test_general_teacher_scores_the_general_prompts_only(tiny, monkeypatch):  # noqa: F811
    out, tok = tiny
    model = _student(out)
    earlier = [[{"role": "user", "content": f"Where did person {i} work?"}] for i in range(5)]
    sampler, seen = _RecordingSampler(model, tok), []
    real = distill.reverse_kl_advantages

    def recording(sampler_lp, teacher_lp, mask, *args):  # noqa: ANN001, ANN202
        seen.append(teacher_lp)
        return real(sampler_lp, teacher_lp, mask, *args)

    monkeypatch.setattr(distill, "reverse_kl_advantages", recording)
    cfg = DistillConfig(
        steps=2, prompts_per_step=4, group_size=2, max_new_tokens=4, earlier_question_share=0.5
    )
    stats = distill.main(
        model, tok, _ConstTeacher(-5.0), PROMPTS, cfg, progress=False, sampler=sampler,
        earlier_prompts=earlier, general_teacher=_ConstTeacher(-1.0),
    )  # fmt: skip
    assert stats["distill_general_teacher"] == "const -1.0"
    for prompts, teacher_lp_B_T in zip(sampler.steps, seen, strict=True):
        assert sum(p in earlier for p in prompts) == 2
        for row, lp_T in enumerate(teacher_lp_B_T):
            expected = -5.0 if prompts[row // 2] in earlier else -1.0  # group_size 2
            assert set(lp_T[lp_T != 0].tolist()) <= {expected}


def test_general_teacher_is_the_base_beside_another_teacher(tiny):  # noqa: F811
    out, _ = tiny
    model = _student(out)
    other = _ConstTeacher(-1.0)  # a previous adapter, a larger model or a server
    assert isinstance(general_teacher(Settings(), model, other), BaseModelTeacher)  # default
    assert general_teacher(Settings(), model, BaseModelTeacher(model)) is None  # night 1
    one = Settings(models={"general_teacher": "teacher"})  # a larger teacher scores everything
    assert general_teacher(one, model, other) is None
    assert load_settings("qwen3").models.general_teacher == "teacher"
    assert load_settings("sandbox").models.general_teacher == "base"
