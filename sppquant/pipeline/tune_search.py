"""The search of ``sppquant tune``: fewest tensors out of INT8, measured in context, confirmed on the task metric.

Why not "rank each tensor quantized alone, keep the top k": on a detector (issue 10) that kept 49 of 70
tensors for a 0.5-point budget. A tensor's error alone is not its share of the full INT8 model's error,
and a task metric that moves one box at a time cannot rank 70 tensors. So:

1. **Moves, measured in context.** From the current plan (everything not kept is INT8) each candidate
   tensor gets two kinds of move, scored by a smooth ``proxy`` of the task error (lower is better: the
   output noise energy, or the score/box error of decoded detections): *keep* (the tensor and its readers
   leave INT8) and *switch* (it stays INT8 with another rule's amax; measured for the candidates whose keep
   gains most; at most once per tensor). A switch costs no INT8, so it wins whenever it gains at least
   ``switch_share`` of what keeping would.
2. **Groups of growing size.** The best ``1, 2, 4, ...`` moves are applied, then the task metric is
   evaluated once; candidates are re-measured in the new context before the next group (all of them on
   the first round, the ``rerank`` best of the last ranking after that).
3. **Trim on the task metric.** Once the budget holds on the tune split, the last group is bisected (the
   shortest prefix that still holds), then each kept tensor is tried back in INT8 (one evaluation each):
   what stays kept is what the task metric needs, not what the proxy guessed.

``evaluate`` counts as one evaluation of the task metric on the tune split; ``proxy`` runs are counted
separately (they run on fewer images). Pure logic over callbacks: the caller builds and runs models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SWITCH_SHARE = 0.5  # a rule switch is taken when it gains >= this share of what keeping the tensor gains
RERANK = 16  # candidates re-measured after each group (the best of the previous ranking)


@dataclass(frozen=True)
class PlanState:
    """Tensors kept out of INT8 (in the order chosen) and rule switches (tensor -> rule) of the INT8 rest."""

    keep: tuple[str, ...] = ()
    rules: tuple[tuple[str, str], ...] = ()

    def rule_of(self, tensor: str) -> str | None:
        return dict(self.rules).get(tensor)

    def apply(self, move: Move) -> PlanState:
        if move.rule is None:
            return PlanState(self.keep + (move.tensor,), self.rules)
        return PlanState(self.keep, tuple((t, r) for t, r in self.rules if t != move.tensor) + ((move.tensor, move.rule),))

    def without_keep(self, tensor: str) -> PlanState:
        return PlanState(tuple(t for t in self.keep if t != tensor), self.rules)


@dataclass(frozen=True)
class Move:
    tensor: str
    rule: str | None = None  # None: keep the tensor out of INT8; else: switch its amax to this rule's
    gain: float = 0.0  # proxy decrease in the context it was measured in

    def __str__(self) -> str:
        return f"keep {self.tensor}" if self.rule is None else f"switch {self.tensor} to {self.rule}"


@dataclass
class SearchResult:
    state: PlanState
    met: bool  # the budget holds on the tune split for ``state``
    ref: float  # the metric in FP32 on the tune split
    got: float  # the metric of ``state`` on the tune split
    curve: list[list[float]] = field(default_factory=list)  # [tensors kept, metric] per evaluation, in order
    evaluations: int = 0
    proxy_runs: int = 0
    steps: list[str] = field(default_factory=list)  # what each group / trim step did


@dataclass
class _Search:
    proxy: Callable[[PlanState], float]
    evaluate: Callable[[PlanState], tuple[float, float]]
    ok: Callable[[float, float], bool]
    alternatives: Mapping[str, Sequence[str]]
    result: SearchResult

    def check(self, state: PlanState) -> bool:
        ref, got = self.evaluate(state)
        self.result.evaluations += 1
        self.result.curve.append([len(state.keep), got])
        log.info("tune: %d kept, %d switched -> %.4f (FP32 %.4f)", len(state.keep), len(state.rules), got, ref)
        self.result.ref = ref
        good = self.ok(ref, got)
        if good:  # the last state that held is the answer (trim only ever moves to states that hold)
            self.result.state, self.result.got, self.result.met = state, got, True
        return good

    def measure(self, state: PlanState, candidates: Sequence[str], switch_share: float, switch_top: int) -> list[Move]:
        """Each candidate's best move from ``state``, best first (see the module docstring). Rule switches are
        measured for the ``switch_top`` candidates whose keep gains most only: a tensor whose error barely
        matters in context gains little from either move."""
        base = self._proxy(state)
        keeps = sorted((Move(t, None, base - self._proxy(state.apply(Move(t)))) for t in candidates),
                       key=lambda m: -m.gain)
        moves = []
        for i, keep in enumerate(keeps):
            # one switch per tensor: switching again could undo it, and the search must end (each tensor is
            # switched at most once and kept at most once)
            switched = state.rule_of(keep.tensor) is not None
            rules = list(self.alternatives.get(keep.tensor, ())) if i < switch_top and not switched else []
            switches = [Move(keep.tensor, r, base - self._proxy(state.apply(Move(keep.tensor, r)))) for r in rules]
            best = max(switches, key=lambda m: m.gain, default=None)
            take_switch = best is not None and best.gain > 0 and best.gain >= switch_share * keep.gain
            moves.append(best if take_switch else keep)
        moves.sort(key=lambda m: -m.gain)
        log.info("tune: %d candidate(s) measured in context (proxy %.4g; %d proxy runs so far); best: %s",
                 len(moves), base, self.result.proxy_runs, ", ".join(f"{m} ({m.gain:.3g})" for m in moves[:3]))
        return moves

    def _proxy(self, state: PlanState) -> float:
        self.result.proxy_runs += 1
        return self.proxy(state)


def greedy_search(tensors: Sequence[str], proxy: Callable[[PlanState], float],
                  evaluate: Callable[[PlanState], tuple[float, float]], ok: Callable[[float, float], bool],
                  alternatives: Mapping[str, Sequence[str]] | None = None, switch_share: float = SWITCH_SHARE,
                  rerank: int = RERANK) -> SearchResult:
    """The plan with the fewest kept tensors this search finds; see the module docstring.

    When even keeping every tensor misses the budget, the result has ``met`` False and every tensor kept.
    """
    s = _Search(proxy, evaluate, ok, alternatives or {}, SearchResult(PlanState(), False, float("nan"), float("nan")))
    state, group, candidates = PlanState(), 1, list(tensors)
    if s.check(state):
        return s.result
    while True:
        moves = [m for m in s.measure(state, candidates, switch_share, max(rerank, group)) if m.tensor not in state.keep]
        if not moves:
            break
        chosen = moves[:group]
        before = state
        for m in chosen:
            state = state.apply(m)
        s.result.steps.append(f"group of {len(chosen)}: " + ", ".join(str(m) for m in chosen))
        if s.check(state):
            _trim(s, before, chosen)
            return s.result
        rest = [t for t in tensors if t not in state.keep]
        if not rest:
            break
        group *= 2
        ranked = [m.tensor for m in moves if m.tensor not in state.keep]
        candidates = (ranked + [t for t in rest if t not in ranked])[:max(rerank, group)] if rerank else rest
    everything = PlanState(tuple(tensors), ())
    if set(state.keep) != set(tensors) and s.check(everything):  # switches were measured by the proxy only
        _trim(s, PlanState(), [Move(t) for t in tensors])
        return s.result
    s.result.state, s.result.got = everything, s.result.curve[-1][1]
    s.result.steps.append("budget not met with every tensor kept out of INT8")
    return s.result


def _trim(s: _Search, before: PlanState, group: list[Move]) -> None:
    """Shortest prefix of the last group that holds (bisection), then each kept tensor tried back in INT8."""
    lo, hi = 0, len(group)  # prefix lo fails (the state before the group did), prefix hi holds

    def prefix(n: int) -> PlanState:
        st = before
        for m in group[:n]:
            st = st.apply(m)
        return st

    while hi - lo > 1:
        mid = (lo + hi) // 2
        if s.check(prefix(mid)):
            hi = mid
        else:
            lo = mid
    state = prefix(hi)
    s.result.steps.append(f"bisection: {hi} of the last group's {len(group)} move(s) needed")
    for t in reversed(state.keep):
        trial = state.without_keep(t)
        if s.check(trial):
            state = trial
            s.result.steps.append(f"back in INT8: {t}")
