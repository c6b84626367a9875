"""tune's search (pipeline.tune_search) against brute force on constructed problems with known answers."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from sppquant.pipeline.tune import search_smallest_k
from sppquant.pipeline.tune_search import Move, PlanState, greedy_search

BOX = 0.004  # one "box" of a discrete task metric


def _problem(damage: dict[str, float], floor: float = 0.0, interact: tuple[str, str] | None = None,
             fixes: dict[str, str] | None = None) -> tuple[Callable[[PlanState], float], Callable[[PlanState], tuple[float, float]]]:
    """Error = floor + damage of every INT8 tensor (a fixing rule switch removes it); ``interact``: a pair whose
    damage (``damage[a]``) only appears when BOTH are INT8. Task metric: 1 - error rounded down to whole boxes."""
    fixes = fixes or {}

    def error(st: PlanState) -> float:
        e = floor
        for t, d in damage.items():
            if interact and t in interact:
                continue
            fixed = t in fixes and st.rule_of(t) == fixes[t]
            if t not in st.keep and not fixed:
                e += d
        if interact and not set(interact) & set(st.keep):
            e += damage[interact[0]]
        return e

    def evaluate(st: PlanState) -> tuple[float, float]:
        return 1.0, 1.0 - BOX * np.ceil(error(st) / BOX - 1e-9)

    return error, evaluate


def _ok(max_drop: float) -> Callable[[float, float], bool]:
    return lambda ref, got: ref - got <= max_drop + 1e-12


def _brute_min_k(names: list[str], evaluate: Callable[[PlanState], tuple[float, float]], max_drop: float) -> int | None:
    for k in range(len(names) + 1):
        for keep in itertools.combinations(names, k):
            if _ok(max_drop)(*evaluate(PlanState(keep))):
                return k
    return None


@pytest.mark.parametrize("seed", range(6))
def test_fewest_kept_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = [f"t{i}" for i in range(9)]
    damage = dict(zip(names, rng.exponential(0.006, len(names))))
    proxy, evaluate = _problem(damage)
    max_drop = 0.005
    res = greedy_search(names, proxy, evaluate, _ok(max_drop))
    want = _brute_min_k(names, evaluate, max_drop)
    assert res.met and len(res.state.keep) == want
    assert _ok(max_drop)(*evaluate(res.state))  # independently re-checked, not the search's own word
    assert want > 0 and res.evaluations == len(res.curve) and res.proxy_runs > 0


def test_in_context_finds_what_the_alone_ranking_misses() -> None:
    """a and b are redundant: either alone in INT8 is harmless, both together cost 3 boxes. Ranked alone, they
    come last; measured in context, keeping one of them is the best move."""
    names = ["a", "b", "c", "d", "e", "f"]
    damage = {"a": 0.012, "b": 0.0, "c": 0.001, "d": 0.001, "e": 0.0015, "f": 0.0012}
    proxy, evaluate = _problem(damage, interact=("a", "b"))
    res = greedy_search(names, proxy, evaluate, _ok(0.005))
    assert res.met and len(res.state.keep) == _brute_min_k(names, evaluate, 0.005) == 2
    assert {"a", "b"} & set(res.state.keep)

    def alone(t: str) -> float:  # error when ONLY t is INT8
        return proxy(PlanState(tuple(n for n in names if n != t)))

    ranked = sorted(names, key=lambda t: -alone(t))
    k, _, _ = search_smallest_k(lambda k: evaluate(PlanState(tuple(ranked[:k]))), len(names), 0.005, "m")
    assert k == 5  # the old ranking needs a or b, which it ranks last


def test_a_rule_switch_is_taken_instead_of_keeping() -> None:
    names = ["a", "b", "c"]
    damage = {"a": 0.02, "b": 0.001, "c": 0.001}
    proxy, evaluate = _problem(damage, fixes={"a": "mse"})
    res = greedy_search(names, proxy, evaluate, _ok(0.005), alternatives={n: ["minmax", "mse"] for n in names})
    assert res.met and res.state.keep == () and res.state.rules == (("a", "mse"),)


def test_impossible_budget_keeps_everything_and_says_not_met() -> None:
    """A floor no tensor can remove (INT8 weights shared by every plan, say) larger than the budget."""
    names = ["a", "b", "c", "d"]
    proxy, evaluate = _problem({n: 0.003 for n in names}, floor=0.01)
    res = greedy_search(names, proxy, evaluate, _ok(0.005))
    assert not res.met and set(res.state.keep) == set(names)
    assert res.curve[-1][0] == len(names) and res.got == pytest.approx(1 - 0.012)
    assert "not met" in res.steps[-1]


def test_nothing_kept_when_int8_already_meets_the_budget() -> None:
    proxy, evaluate = _problem({"a": 0.001, "b": 0.001})
    res = greedy_search(["a", "b"], proxy, evaluate, _ok(0.005))
    assert res.met and res.state == PlanState() and res.evaluations == 1 and res.proxy_runs == 0


def test_plan_state_moves() -> None:
    st = PlanState().apply(Move("x", "mse")).apply(Move("y")).apply(Move("x", "minmax"))
    assert st.keep == ("y",) and st.rules == (("x", "minmax"),) and st.rule_of("x") == "minmax"
    assert st.without_keep("y") == PlanState((), (("x", "minmax"),))


def test_switches_cannot_ping_pong_and_the_search_ends() -> None:
    """Moves measured one at a time but applied as a group can undo each other: here a and b are bad on the same
    rule, so from (r1, r1) switching either alone to r2 looks good and both together land on (r2, r2), and back.
    Each tensor is switched at most once, so the search ends, keeping tensors until the budget holds."""
    names = ["c", "a", "b"]
    _, evaluate = _problem({n: 0.004 for n in names})  # switches fix nothing on the task metric

    def proxy(st: PlanState) -> float:
        clash = not {"a", "b"} & set(st.keep) and st.rule_of("a") == st.rule_of("b")
        return 0.01 * len({"a", "b"} - set(st.keep)) + (0 if "c" in st.keep else 5) + (1.0 if clash else 0.0)

    res = greedy_search(names, proxy, evaluate, _ok(0.005), alternatives={n: ["r1", "r2"] for n in ("a", "b")})
    assert res.met and len(res.state.keep) == _brute_min_k(names, evaluate, 0.005) == 2
    assert res.evaluations < 10
