"""Which augmentation strategy a teacher-query budget buys, and how a mix splits a count.

The rule follows Chan et al. 2024, "Balancing Cost and Effectiveness of Synthetic Data
Generation Strategies for LLMs" (arXiv 2409.19759): what decides is the budget ratio
BR = teacher queries / seed questions. Below a switch point, new answers to the seed
questions (answer augmentation) give the student more per query; above it, new questions
do. The switch point falls as the seed set grows; `SWITCH_POINTS` holds the paper's
figures and `switch_point(n)` interpolates them linearly in log10(n_seeds), held flat
outside the measured range (the paper has no point below 100 or above the full sets).
With no seeds at all, only new questions are possible (from the tree's leaves alone).

    >>> choose_strategy(2_000, 100).strategy     # BR 20 < 39
    'answer_augmentation'
    >>> choose_strategy(50_000, 1_000).strategy  # BR 50 > 17.6
    'new_question'

docs/strategies.md has the table with its sources and what could not be checked. Left
out: the paper's cost in dollars (a query here is one backend request, whatever its
tokens), and any choice of student model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from synth.planning.allocate import AllocationError


class BudgetError(AllocationError):
    """A budget, seed count or mix that cannot be planned; the message says what to change."""


@dataclass(frozen=True)
class SwitchPoint:
    n_seeds: int  # size of the seed question set
    ratio: float  # budget ratio at which new questions overtake answer augmentation
    source: str  # where in the paper, and how the figure was read


# The one table the rule reads. Section numbers are those of arXiv 2409.19759 (v2/v3).
SWITCH_POINTS: tuple[SwitchPoint, ...] = (
    SwitchPoint(100, 39.0, "§5.2, Fig. 3: with 100 seeds the switch lies between BR 27 and 51; "
                           "midpoint taken"),
    SwitchPoint(1_000, 17.6, "§5.2, Fig. 3: with 1,000 seeds, average switch at BR 17.6"),
    SwitchPoint(7_000, 16.4, "§5.2, Fig. 3: full seed sets, average switch at BR 16.4; the size is "
                             "taken as ~7,000 (GSM8K train has 7,473)"),
)
# Reported, not used: with a different student model (Mistral 7B) the switch moved to BR ~12
# (§5.3, Fig. 7). The rule does not know the student, so it keeps the main student's points.

PAPER = "Chan et al. 2024, arXiv 2409.19759"


@dataclass(frozen=True)
class StrategyChoice:
    strategy: str  # one of synth.config.recipe.STRATEGIES
    ratio: float | None  # budget requests / seed rows; None without seeds
    reason: str  # the ratio, the threshold and why, for the run report
    threshold: float | None = None


def switch_point(n_seeds: int) -> float:
    """The budget ratio above which new questions win, for a seed set of `n_seeds`.

    Piecewise-linear in log10(n_seeds) between the points of `SWITCH_POINTS`, flat outside:
    switch_point(100) == 39.0, switch_point(1000) == 17.6, switch_point(316) ~ 28.3.
    """
    if n_seeds <= 0:
        raise BudgetError(f"a switch point needs at least one seed row, got {n_seeds}")
    points = SWITCH_POINTS
    if n_seeds <= points[0].n_seeds:
        return points[0].ratio
    if n_seeds >= points[-1].n_seeds:
        return points[-1].ratio
    x = math.log10(n_seeds)
    lo, hi = next((a, b) for a, b in zip(points, points[1:]) if n_seeds <= b.n_seeds)
    t = (x - math.log10(lo.n_seeds)) / (math.log10(hi.n_seeds) - math.log10(lo.n_seeds))
    return lo.ratio + t * (hi.ratio - lo.ratio)


def _n(x: float) -> str:
    return f"{x:,.1f}".rstrip("0").rstrip(".")


def choose_strategy(budget_requests: int, n_seeds: int) -> StrategyChoice:
    """The strategy for `strategy: auto`, with the reason written out."""
    if budget_requests < 1:
        raise BudgetError(f"the teacher budget must be at least 1 request, got {budget_requests}: "
                          "set generation.budget (or generation.target, which defaults it to 4 x target)")
    if n_seeds < 0:
        raise BudgetError(f"the seed count cannot be negative, got {n_seeds}")
    if n_seeds == 0:
        return StrategyChoice("new_question", None,
                              "no seed rows: new questions from the tree's leaves alone (answer augmentation "
                              "and question rephrase rewrite seed rows)")
    ratio = budget_requests / n_seeds
    threshold = switch_point(n_seeds)
    where = (f"budget ratio {_n(ratio)} ({budget_requests:,} requests / {n_seeds:,} seeds) "
             f"{'is below' if ratio < threshold else 'is at or above'} the switch point {_n(threshold)} for "
             f"{n_seeds:,} seeds")
    if ratio < threshold:
        return StrategyChoice(
            "answer_augmentation", ratio,
            f"{where}: new answers to the seed questions give more per teacher query while the budget is "
            f"small against the seed set ({PAPER}, §5.2)", threshold)
    return StrategyChoice(
        "new_question", ratio,
        f"{where}: once the seed questions are well covered, new questions add more than further answers "
        f"({PAPER}, §5.2)", threshold)
