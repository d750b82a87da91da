"""The fast engine makes the slow reference's decision on every edge.

For each case (tiny model, metric, ablation, granularity, use_abs, head order) the thresholds are
read off the reference's own scores (near quantiles of the scores of a run that keeps every
edge, in the widest gap between two neighbouring scores), so that each run keeps some edges and
removes others. The engine runs first; the reference then runs with `follow=` the engine's
decisions, so that after a float-rounding tie (a score within TIE of the threshold, where the
two may legitimately decide differently) both continue on the same path and every later edge
is still compared like for like. Every other difference in a kept flag, in whether an edge was
tested, or in a score beyond SCORE_ATOL + SCORE_RTOL * |score| is reported with the edge's
name, both scores and the distance to the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import reference_acdc as ref
from conftest import TinyTask

# The slow hooked references and tiny random models need TransformerLens 3.x (see conftest).
pytestmark = pytest.mark.hooked_transformer

TIE = 1e-5  # relative to max(1, |threshold|)
SCORE_ATOL = 1e-4
SCORE_RTOL = 1e-4


@dataclass(frozen=True)
class Case:
    model: str
    metric: str = "kl"
    ablation: str = "corrupt"
    granularity: str = "qkv"
    use_abs: bool = False
    reverse_head_order: bool = False
    candidates: int = 0  # removals per evaluation (0: the engine's choice for the model's size)
    low_rank: bool = False  # the low-rank unembedding even where the model is too small for it
    window: bool = False  # clean and corrupt share a prefix; no metric at the last position
    last_only: bool = False  # one metric position per prompt, its last (as IOI)

    def __str__(self) -> str:
        flags = [self.model, self.metric, self.ablation, self.granularity]
        flags += ["abs"] * self.use_abs + ["reverse"] * self.reverse_head_order
        flags += [f"candidates{self.candidates}"] * bool(self.candidates)
        flags += ["lowrank"] * self.low_rank
        flags += ["window"] * self.window + ["lastonly"] * self.last_only
        return "-".join(flags)


CASES = [
    Case("attn2"),
    Case("attn2", ablation="zero"),
    Case("attn2", "logit_diff", granularity="head"),
    Case("attn2", reverse_head_order=True),
    Case("attn2", "nll", "zero"),
    Case("mlp3"),
    Case("mlp3", "logit_diff", "zero"),
    Case("mlp3", ablation="zero", granularity="head"),
    Case("mlp3", "prob_diff", use_abs=True),
    Case("nonorm2", granularity="head"),
    Case("nonorm2", "logit_diff"),
    Case("nonorm2", ablation="zero", use_abs=True),
    Case("nonorm2", "l2"),
    Case("nonorm2", "nll", granularity="head", reverse_head_order=True),
    Case("one_head"),
    # one test per evaluation, and many, with the low-rank unembedding forced on
    Case("attn2", candidates=1),
    Case("mlp3", "logit_diff", candidates=1),
    Case("attn2", "logit_diff", candidates=1, low_rank=True),
    Case("attn2", candidates=8, low_rank=True),
    Case("attn2", ablation="zero", granularity="head", candidates=5, low_rank=True),
    Case("mlp3", candidates=8, low_rank=True),
    Case("mlp3", "prob_diff", "zero", candidates=3, low_rank=True),
    Case("nonorm2", "l2", candidates=8, low_rank=True),
    Case("one_head", candidates=8, low_rank=True),
    # positions before the first difference and after the last metric position never change:
    # the engine computes only the window between them
    Case("attn2", window=True),
    Case("mlp3", "logit_diff", window=True),
    Case("mlp3", ablation="zero", window=True),
    Case("nonorm2", granularity="head", window=True),
    Case("mlp3", "nll", candidates=5, low_rank=True, window=True),
    Case("mlp3", last_only=True),
    Case("attn2", "logit_diff", candidates=4, last_only=True),
    # bidirectional attention: every position reads every other, so no window
    Case("bidir_attn2"),
    Case("bidir_attn2", ablation="zero"),
    Case("bidir_attn2", "logit_diff", granularity="head"),
    Case("bidir_attn2", ablation="zero", granularity="head", candidates=5, low_rank=True),
    Case("bidir_mlp3"),
    Case("bidir_mlp3", "l2", "zero"),
    Case("bidir_mlp3", ablation="zero", granularity="head"),
    Case("bidir_mlp3", "logit_diff", granularity="head", candidates=8, low_rank=True),
    Case("bidir_attn2", window=True),
    Case("bidir_mlp3", "l2", "zero", window=True),
    Case("bidir_mlp3", "nll", candidates=3, window=True),
    Case("bidir_attn2", "logit_diff", last_only=True),
    # mean ablations: one mean per sender, or one per position (prompts of different lengths:
    # padding must not enter the mean)
    Case("attn2", ablation="mean"),
    Case("attn2", ablation="mean-positional", granularity="head"),
    Case("mlp3", "logit_diff", "mean", granularity="head"),
    Case("mlp3", ablation="mean-positional"),
    Case("nonorm2", "nll", "mean-positional"),
    Case("nonorm2", ablation="mean", granularity="head", candidates=5, low_rank=True),
    Case("mlp3", "prob_diff", "mean", candidates=8, low_rank=True, window=True),
    Case("one_head", ablation="mean-positional", candidates=8, low_rank=True),
    # the model families: rotary (NeoX and GPT-J layouts), parallel blocks, grouped- and
    # multi-query attention, gated MLPs, local attention, soft-capping, post-sublayer norms
    *(Case(family, metric, ablation, granularity, candidates=candidates, low_rank=low_rank)
      for family in ("neox2", "gptj2", "llama2", "gemma2", "neo2")
      for metric, ablation, granularity, candidates, low_rank in (
          ("kl", "corrupt", "qkv", 0, False),
          ("logit_diff", "zero", "head", 0, False),
          ("nll", "mean-positional", "qkv", 5, True),
      )),
    Case("llama2", "nll", "mean", window=True),
    Case("neox2", "prob_diff", "zero", candidates=8, low_rank=True, window=True),
    Case("gemma2", "kl", "zero", "qkv"),
]
QUANTILES = (0.3, 0.7)

_calibration: dict[Case, list[float]] = {}


def windowed(tiny: TinyTask, prefix: int = 3) -> TinyTask:
    """The task with corrupt prompts that repeat the first `prefix` clean tokens, no metric
    position among them, and the longest prompts' metric positions off their last two."""
    longest = max(len(c) for c in tiny.clean)
    corrupt = [c[:prefix] + k[prefix:] for c, k in zip(tiny.clean, tiny.corrupt, strict=True)]
    positions = [[p for p in pos if p >= prefix and (len(c) < longest or p < longest - 2)]
                 or [longest - 3] for c, pos in zip(tiny.clean, tiny.positions, strict=True)]
    return TinyTask(tiny.clean, corrupt, positions, tiny.answers, tiny.wrong_answers)


def calibration_scores(case: Case, model, task) -> list[float]:
    """Sorted scores (|scores| with use_abs) of a reference run that keeps every edge."""
    if case not in _calibration:
        keep_all = 0.0 if case.use_abs else -math.inf
        result = ref.reference_acdc(model, *task.args(), threshold=keep_all, metric=case.metric,
                                    ablation=case.ablation, granularity=case.granularity,
                                    use_abs=case.use_abs,
                                    reverse_head_order=case.reverse_head_order)
        scores = [abs(s) if case.use_abs else s for _, s in result.values()]
        _calibration[case] = sorted(scores)
    return _calibration[case]


def threshold_at(scores: list[float], quantile: float) -> float:
    """A threshold near `quantile` of `scores`, in the middle of the widest gap between two
    neighbouring scores within 10 percentage points of it (as far from every score as can be).
    """
    n = len(scores)
    lo = max(0, int((quantile - 0.1) * (n - 1)))
    hi = min(n - 2, int((quantile + 0.1) * (n - 1)))
    i = max(range(lo, hi + 1), key=lambda j: scores[j + 1] - scores[j])
    return (scores[i] + scores[i + 1]) / 2


def make_engine_task(case: Case, tiny, threshold: float):
    from acdc.core.tasks.values import Task

    needs_answers = case.metric in ("logit_diff", "prob_diff", "nll")
    needs_wrong = case.metric in ("logit_diff", "prob_diff")
    return Task(
        name=f"tiny-{case}", description="random tokens", source="tests", model=None,
        metric=case.metric, threshold=threshold, ablation=case.ablation, seed=0,
        clean=tiny.clean, corrupt=tiny.corrupt, positions=tiny.positions,
        answers=tiny.answers if needs_answers else None,
        wrong_answers=tiny.wrong_answers if needs_wrong else None,
    )


def compare(case: Case, threshold: float, engine: dict[str, tuple[bool, float | None]],
            reference: dict[str, tuple[bool, float | None]]) -> tuple[list[str], int]:
    """Differences between the engine and the reference, and the number of tolerated ties."""
    problems: list[str] = []
    ties = 0
    tie = TIE * max(1.0, abs(threshold))
    for name, (ref_kept, ref_score) in reference.items():
        eng_kept, eng_score = engine[name]
        where = (f"{name}: reference kept={ref_kept} score={ref_score!r}, engine kept={eng_kept} "
                 f"score={eng_score!r}, threshold={threshold!r}")
        if (ref_score is None) != (eng_score is None):
            problems.append(f"{where} (tested by only one of them)")
            continue
        if ref_kept != eng_kept:
            if ref_score is None:
                problems.append(f"{where} (untested, dead node)")
                continue
            distance = abs((abs(ref_score) if case.use_abs else ref_score) - threshold)
            if distance <= tie:
                ties += 1
            else:
                problems.append(f"{where} (reference score {distance:.3g} from the threshold)")
                continue
        if ref_score is None:
            continue
        if abs(ref_score - eng_score) > SCORE_ATOL + SCORE_RTOL * abs(ref_score):
            problems.append(f"{where} (scores differ by {abs(ref_score - eng_score):.3g})")
    return problems, ties


@pytest.mark.parametrize("quantile", QUANTILES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_engine_matches_reference(tiny_models, tiny_tasks, case, quantile, monkeypatch):
    from acdc.core.architecture import model_shape
    from acdc.core.loading import LoadedModel
    from acdc.core.models import extract_weights
    from acdc.core.settings import CommonSettings
    from acdc.methods.acdc import propagation
    from acdc.methods.acdc.search import AcdcSettings, run_acdc

    if case.low_rank:
        monkeypatch.setattr(propagation, "LOW_RANK_MIN_WORK", 0)
        monkeypatch.setattr(propagation, "THIN_PRODUCT_COST", 0)  # low rank wherever it applies

    model, tiny = tiny_models[case.model], tiny_tasks[case.model]
    if case.window:
        tiny = windowed(tiny)
    if case.last_only:
        tiny = TinyTask(tiny.clean, tiny.corrupt, [[len(c) - 1] for c in tiny.clean], tiny.answers,
                        tiny.wrong_answers)
    threshold = threshold_at(calibration_scores(case, model, tiny), quantile)

    common = CommonSettings(case.metric, case.ablation, case.granularity)
    settings = AcdcSettings(threshold, abs=case.use_abs, reverse_head_order=case.reverse_head_order,
                            candidates=case.candidates)
    loaded = LoadedModel(case.model, extract_weights(model), None, model_shape(model.cfg))
    result = run_acdc(loaded, make_engine_task(case, tiny, threshold), common, settings)
    assert not result.partial
    names = [edge.name for edge in result.graph.edges]
    engine = {name: (result.kept[i], result.scores[i]) for i, name in enumerate(names)}

    reference = ref.reference_acdc(
        model, *tiny.args(), threshold=threshold, metric=case.metric, ablation=case.ablation,
        granularity=case.granularity, use_abs=case.use_abs,
        reverse_head_order=case.reverse_head_order,
        follow={name: kept for name, (kept, _) in engine.items()},
        follow_tolerance=TIE * max(1.0, abs(threshold)),
    )
    assert set(names) == set(reference), "the engine's graph is not the reference's"
    assert len(names) == len(set(names))

    problems, ties = compare(case, threshold, engine, reference)
    n_kept = sum(kept for kept, _ in reference.values())
    summary = (f"{case} threshold={threshold:.6g}: reference keeps {n_kept}/{len(reference)}, "
               f"engine keeps {sum(k for k, _ in engine.values())}, {ties} tolerated ties")
    assert not problems, summary + f", {len(problems)} differences:\n" + "\n".join(problems[:25])
    # the case must be worth running: some edges kept, some removed
    assert 0 < n_kept < len(reference), summary


def test_compare_reports_differences_and_tolerates_ties():
    """The comparison itself: a flipped decision far from the threshold, an edge tested by one
    side only and a score difference are reported; a flip within TIE of the threshold is not."""
    case = Case("attn2")
    reference = {"a": (True, 0.5), "b": (False, 0.1), "c": (False, None), "d": (True, 0.2 + 1e-7)}
    assert compare(case, 0.2, dict(reference), reference) == ([], 0)
    engine = {"a": (False, 0.5), "b": (False, 0.1 + 1e-3), "c": (False, 0.05), "d": (False, 0.2)}
    problems, ties = compare(case, 0.2, engine, reference)
    assert ties == 1
    assert [p.split(":")[0] for p in problems] == ["a", "b", "c"]
    assert "0.3 from the threshold" in problems[0]
    assert "scores differ" in problems[1]
    assert "tested by only one" in problems[2]
