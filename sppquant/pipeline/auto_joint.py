"""``auto`` within a fixed time: whole rule choices judged jointly at the model output, close calls first.

Measuring each tensor's rules ALONE at the output (`auto.pick_rules`) costs contested tensors x
rules x images forward passes: 12-80x a histogram pass on the real models (benchmarks/RESULTS.md),
and choices made alone do not add up at the output. Here every measurement is one run of the
exported INT8 Q/DQ model (weights, placement, FP32 between the pairs) with ALL tensors quantized,
its activation scales fed per run (`quantize.scale_feeds`: one session), on ``images`` calibration
images, scored by output SQNR against FP32:

1. each candidate rule's own table (every tensor on that rule); the best is the start;
2. greedy moves, one tensor to another rule with the earlier choices applied, in order of the
   move's LOCAL gain (the histogram's expected squared error, `calibration.mse.error_parts`; the
   locally most promising, then the closest local calls first); a move is kept when the output
   SQNR rises by more than ``TIE_DB``. Rules more than ``PRUNE_DB`` worse locally are not tried.

Everything stops at ``budget_s`` (the caller derives it from the histogram pass's own time, so the
2x bound on calibration time holds by construction); moves not reached are recorded as skipped.
Per tensor the result records the winning rule and why: the measured output SQNR of every rule
tried on it (with the choices of that moment), or "start" / "skipped" where it was not tried.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from sppquant.calibration.histogram import Histogram
from sppquant.calibration.mse import error_parts
from sppquant.calibration.table import scale_from_amax
from sppquant.quantize.scale_feeds import scale_fed_model, scale_feeds
from sppquant.tasks.metrics import SqnrAccumulator

log = logging.getLogger(__name__)

# Calibration images per contest run: the budget (about one histogram pass) buys about as many forward passes
# as there are calibration images, so images per run trade the number of moves tried against their noise.
JOINT_IMAGES = 2
TIE_DB = 0.05
PRUNE_DB = 10.0
SCALE_REL_TOL = 0.02


@dataclass(frozen=True)
class Move:
    tensor: str
    rule: str
    local_gain_db: float  # the tensor's own error: current rule's over this rule's (dB; > 0: better locally)
    nsr_drop: float = 0.0  # the tensor's own noise-to-signal ratio: current rule's minus this rule's


@dataclass
class JointChoice:
    """The per-tensor rules and why (see the module docstring)."""

    rules: dict[str, str]
    amax: dict[str, float]
    scores: dict[str, dict[str, float]]  # tensor -> rule -> joint output SQNR when tried (dB)
    start: str  # the rule whose whole table scored best
    table_scores: dict[str, float]  # rule -> output SQNR of its whole table (dB)
    why: dict[str, str] = field(default_factory=dict)  # tensor -> one line
    pruned: dict[str, dict[str, float]] = field(default_factory=dict)  # tensor -> rule -> local loss (dB)
    runs: int = 0
    skipped: int = 0  # moves not tried when the budget ran out
    final_db: float = float("nan")
    budget_s: float = 0.0
    trials: list[tuple[str, str, float, float, bool]] = field(default_factory=list)  # tensor, rule, local gain, dB, kept

    def trials_of(self) -> set[str]:
        """The tensors some move was measured on."""
        return {t[0] for t in self.trials}


def local_errors(hists: Mapping[str, Histogram], per_rule: Mapping[str, Mapping[str, float]],
                 rules: Sequence[str], names: Collection[str]) -> dict[str, dict[str, float]]:
    """tensor -> rule -> expected squared error on its own histogram (rounding + clipping) over the tensor's
    energy: its local noise-to-signal ratio, so tensors of any magnitude compare (0 where it has no energy)."""
    out: dict[str, dict[str, float]] = {}
    for n in names:
        h = hists.get(n)
        if h is None or h.count == 0 or h.bin_width == 0.0:
            continue
        r, c = error_parts(h.counts, h.bin_width, np.array([per_rule[k][n] for k in rules]))
        energy = float(np.sum(h.counts * ((np.arange(len(h.counts)) + 0.5) * h.bin_width) ** 2))
        out[n] = {k: float(v) / energy if energy > 0 else 0.0 for k, v in zip(rules, r + c)}
    return out


def _gain_db(cur: float, new: float) -> float:
    if cur <= 0.0 and new <= 0.0:
        return 0.0
    if new <= 0.0:
        return math.inf
    return 10 * math.log10(max(cur, 1e-300) / new)


def order_moves(current: Mapping[str, str], alternatives: Mapping[str, Sequence[str]],
                errors: Mapping[str, Mapping[str, float]], position: Mapping[str, int]) -> list[Move]:
    """Every (tensor, other rule) move, largest drop of the tensor's own noise-to-signal ratio first (then the
    smallest rises: the closest calls); equal drops in graph order (earlier first).

    Why the ratio's drop and not its ratio in dB: an error that already lies 40 dB below its signal moves
    the output little whatever its dB gain (measured on the detector: such moves changed the output by
    < 0.01 dB), and a tensor's relative noise reaches the output roughly in proportion.
    """
    moves = [Move(n, r, _gain_db(errors[n][current[n]], errors[n][r]) if n in errors else 0.0,
                  errors[n][current[n]] - errors[n][r] if n in errors else 0.0)
             for n, alts in alternatives.items() for r in alts if r != current[n]]
    return sorted(moves, key=lambda m: (-m.nsr_drop, position.get(m.tensor, 0), m.rule))


def _distinct(per_rule: Mapping[str, Mapping[str, float]], rules: Sequence[str], n: str) -> list[str]:
    """The rules of ``rules`` whose scale for ``n`` differs (by more than SCALE_REL_TOL) from every earlier one's."""
    kept: list[str] = []
    for r in rules:
        s = scale_from_amax(per_rule[r][n])
        if all(abs(s - scale_from_amax(per_rule[k][n])) > SCALE_REL_TOL * max(abs(s), 1e-30) for k in kept):
            kept.append(r)
    return kept


def _images(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and np.ndim(first) > 0 else 1


class _Contest:
    """Runs the scale-fed INT8 model on the contest feeds and scores its outputs against FP32."""

    def __init__(self, runner: Any, inputs: Mapping[str, str], feeds: Sequence[dict[str, np.ndarray]],
                 refs: Sequence[Mapping[str, np.ndarray]], outputs: list[str], ties: Mapping[str, str]) -> None:
        self.runner, self.inputs, self.feeds, self.refs, self.outputs, self.ties = (
            runner, inputs, feeds, refs, outputs, ties)
        self.runs, self.last_s = 0, 0.0

    def score(self, amax: Mapping[str, float]) -> float:
        t0 = time.perf_counter()
        a = dict(amax)
        for out, src in self.ties.items():
            if src in a:
                a[out] = a[src]
        sf = scale_feeds(self.inputs, {t: scale_from_amax(a[t]) for t in self.inputs})
        acc = SqnrAccumulator()
        for f, ref in zip(self.feeds, self.refs):
            y = self.runner.run({**f, **sf}, self.outputs)
            for o in self.outputs:
                acc.add(ref[o], y[o])
        self.runs += 1
        self.last_s = time.perf_counter() - t0
        return acc.db


RunnerFactory = Callable[[onnx.ModelProto], Any]  # model -> context manager yielding a runner with .run(feeds, outputs)


def pick_rules_joint(model: onnx.ModelProto, per_rule: Mapping[str, Mapping[str, float]], candidates: Sequence[str],
                     feeds: Callable[[], list[dict[str, np.ndarray]]], outputs: list[str],
                     open_runner: RunnerFactory, budget_s: float | None, hists: Mapping[str, Histogram],
                     ties: Mapping[str, str] | None = None, pass_images: int = 0) -> JointChoice:
    """Per tensor the rule of ``per_rule`` (rule -> tensor -> amax) chosen as the module docstring says.

    ``ties``: tied tensor -> its source (the tied tensor's amax is the source's; it is not contested).
    ``budget_s`` None: the time the FP32 model takes on ``pass_images`` images, estimated from the contest
    images' FP32 reference run (a lower bound of the histogram pass, which also runs the model on them).
    Tensors the Q/DQ placement does not quantize keep ``candidates[0]``'s threshold (nothing runs them).
    The first whole table always runs, whatever the budget (a start needs one measurement).
    """
    t0 = time.perf_counter()
    ties = dict(ties or {})
    names = list(per_rule[candidates[0]])
    base = dict(per_rule[candidates[0]])
    q, inputs, _ = scale_fed_model(model, {n: scale_from_amax(base[ties.get(n, n)]) for n in names
                                           if base[ties.get(n, n)] > 0})
    quantized = [n for n in inputs if n not in ties and n in base]
    errors = local_errors(hists, per_rule, candidates, quantized)
    alternatives, pruned = _alternatives(per_rule, candidates, quantized, errors)
    contested = {n: alts for n, alts in alternatives.items() if len(alts) > 1}
    choice = JointChoice({n: candidates[0] for n in names}, base, {}, candidates[0], {}, pruned=pruned)
    choice.rules.update({n: alts[0] for n, alts in alternatives.items()})  # the only rule left where uncontested
    if contested:
        data = feeds()
        with open_runner(model) as fp32:
            t_ref = time.perf_counter()
            refs = [fp32.run(f, outputs) for f in data]
            t_ref = time.perf_counter() - t_ref
        if budget_s is None:
            budget_s = t_ref / max(1, sum(_images(f) for f in data)) * pass_images
        choice.budget_s = budget_s
        position = {t: i for i, nd in enumerate(model.graph.node) for t in nd.output}
        with open_runner(q) as runner:
            contest = _Contest(runner, inputs, data, refs, outputs, ties)
            _start(choice, contest, per_rule, candidates, quantized, alternatives, errors, t0 + budget_s)
            _greedy(choice, contest, per_rule, order_moves(choice.rules, contested, errors, position), t0 + budget_s)
            choice.runs = contest.runs
        log.info("auto: start %s (whole tables %s dB), %d of %d quantized tensors contested, %d runs, %d move(s) "
                 "kept, %d skipped (time budget %.2f s), output SQNR %.2f dB on %d image(s)", choice.start,
                 {r: round(v, 2) for r, v in choice.table_scores.items()}, len(contested), len(quantized),
                 contest.runs, sum(1 for n in contested if choice.rules[n] != choice.start), choice.skipped,
                 budget_s, choice.final_db, len(data))
    for n in names:
        choice.amax[n] = per_rule[choice.rules[n]][n]
        if n not in quantized:
            choice.why[n] = "not contested: " + ("tied to " + ties[n] if n in ties else "not quantized by the placement")
        elif n not in contested:
            choice.why[n] = "not contested: every rule " + ("not pruned locally " if n in pruned else "") + \
                "gives the same scale"
    return choice


def _alternatives(per_rule: Mapping[str, Mapping[str, float]], candidates: Sequence[str], quantized: list[str],
                  errors: Mapping[str, Mapping[str, float]]) -> tuple[dict[str, list[str]], dict[str, dict[str, float]]]:
    """Per tensor the rules worth a run (distinct scales, not more than PRUNE_DB worse locally than the best),
    and the pruned ones with their local gap (dB)."""
    alternatives: dict[str, list[str]] = {}
    pruned: dict[str, dict[str, float]] = {}
    for n in quantized:
        alive = list(candidates)
        if n in errors:
            best = min(errors[n].values())
            far = {r: round(_gain_db(errors[n][r], best), 1) for r in candidates if _gain_db(errors[n][r], best) > PRUNE_DB}
            alive = [r for r in candidates if r not in far] or list(candidates)
            if far:
                pruned[n] = far
        alternatives[n] = _distinct(per_rule, alive, n)
    return alternatives, pruned


def _start(choice: JointChoice, contest: _Contest, per_rule: Mapping[str, Mapping[str, float]],
           candidates: Sequence[str], quantized: list[str], alternatives: Mapping[str, Sequence[str]],
           errors: Mapping[str, Mapping[str, float]], deadline: float) -> None:
    """Score each candidate's whole table (distinct ones only; where the rule is pruned on a tensor, the locally
    best rule's threshold there); the best (earlier on near ties) is the start, exactly as measured."""
    seen: list[str] = []
    tables: dict[str, dict[str, str]] = {}  # rule -> tensor -> the rule whose threshold its table uses
    for r in candidates:
        tables[r] = {n: _like(n, r, alternatives[n], per_rule, errors, choice.pruned.get(n, {})) for n in quantized}
        if any(all(_same(per_rule, n, tables[r][n], tables[k][n]) for n in quantized) for k in seen):
            continue  # the same table: no run
        if seen and time.perf_counter() + contest.last_s > deadline:
            break
        seen.append(r)
        choice.table_scores[r] = contest.score({**per_rule[r], **{n: per_rule[tables[r][n]][n] for n in quantized}})
    best = max(choice.table_scores.values())
    choice.start = next(r for r in seen if choice.table_scores[r] >= best - TIE_DB)
    choice.final_db = choice.table_scores[choice.start]
    for n in quantized:
        rule = choice.rules[n] = tables[choice.start][n]
        same = _same(per_rule, n, rule, choice.start)
        choice.why[n] = f"start: {choice.start}'s whole table scored best" + (
            "" if rule == choice.start else f" ({rule}: {choice.start}'s scale)" if same
            else f" ({choice.start} pruned locally: {rule}, best locally)")
        if len(alternatives[n]) > 1 and same:  # its evidence: the whole tables' scores (its scale: the start's)
            choice.scores[n] = {**choice.table_scores, rule: choice.table_scores[choice.start]}


def _like(n: str, start: str, alts: Sequence[str], per_rule: Mapping[str, Mapping[str, float]],
          errors: Mapping[str, Mapping[str, float]], pruned: Collection[str]) -> str:
    """The start rule where it or a rule of ``alts`` with its scale is alive; else the locally best of ``alts``."""
    same = same_scale(n, start, alts, per_rule)
    if same:
        return start if start not in pruned else same[0]
    return min(alts, key=lambda r: errors.get(n, {}).get(r, 0.0))


def _same(per_rule: Mapping[str, Mapping[str, float]], n: str, a: str, b: str) -> bool:
    """Rules ``a`` and ``b`` give ``n`` one scale (within SCALE_REL_TOL): a move between them needs no run."""
    sa, sb = scale_from_amax(per_rule[a][n]), scale_from_amax(per_rule[b][n])
    return a == b or abs(sa - sb) <= SCALE_REL_TOL * max(abs(sb), 1e-30)


def same_scale(n: str, start: str, alts: Sequence[str], per_rule: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The rules of ``alts`` whose scale for ``n`` is the start rule's (within SCALE_REL_TOL); start first."""
    s = scale_from_amax(per_rule[start][n])
    same = [r for r in alts if abs(scale_from_amax(per_rule[r][n]) - s) <= SCALE_REL_TOL * max(abs(s), 1e-30)]
    return sorted(same, key=lambda r: r != start)


def _greedy(choice: JointChoice, contest: _Contest, per_rule: Mapping[str, Mapping[str, float]],
            moves: Sequence[Move], deadline: float) -> None:
    """Try ``moves`` in order with the earlier choices applied; keep those that raise the output SQNR."""
    kept: dict[str, str] = {}  # tensor -> the kept move, in words
    moves = [mv for mv in moves if not _same(per_rule, mv.tensor, mv.rule, choice.rules[mv.tensor])]
    for i, mv in enumerate(moves):
        if _same(per_rule, mv.tensor, mv.rule, choice.rules[mv.tensor]):
            continue
        if time.perf_counter() + contest.last_s > deadline:
            left = [m for m in moves[i:] if not _same(per_rule, m.tensor, m.rule, choice.rules[m.tensor])]
            choice.skipped = len(left)
            for m in left:
                if m.tensor not in choice.trials_of():
                    choice.why[m.tensor] = (f"{choice.rules[m.tensor]}: the start's scale, other rules not tried "
                                            "(time budget)")
            break
        cur = choice.rules[mv.tensor]
        amax = {n: per_rule[choice.rules[n]][n] for n in choice.rules}
        amax[mv.tensor] = per_rule[mv.rule][mv.tensor]
        db = contest.score(amax)
        if mv.tensor not in choice.trials_of():  # its evidence becomes the moves measured on it
            choice.scores[mv.tensor] = {}
        tried = choice.scores[mv.tensor]
        tried[cur] = choice.final_db  # the current rule's score with every choice made so far
        tried[mv.rule] = db
        choice.trials.append((mv.tensor, mv.rule, mv.local_gain_db, db, db > choice.final_db + TIE_DB))
        if db > choice.final_db + TIE_DB:
            kept[mv.tensor] = (f"{mv.rule}: output SQNR {db:.2f} dB with it vs {choice.final_db:.2f} dB with {cur} "
                               f"(local gain {mv.local_gain_db:+.2f} dB)")
            choice.rules[mv.tensor], choice.final_db = mv.rule, db
    for n in choice.trials_of():
        choice.why[n] = (kept.get(n) or f"{choice.rules[n]}: kept") + "; measured " + ", ".join(
            f"{r} {v:.2f} dB" for r, v in choice.scores[n].items())
