"""sppquant tune's greedy in-context search (`pipeline.tune_search.greedy_search`) on the benchmark's models.

Same split (even / odd eval images = tune / held-out), task metric and Q/DQ models as `tune_auto.tune_model`;
what differs is the search: moves (keep a tensor out of INT8, or switch its amax to another rule's) are
measured in context by a smooth proxy on ``proxy_images`` tune images, applied in groups, and the plan is
trimmed on the task metric (see the module docstring of `sppquant.pipeline.tune_search`).

Proxies (lower is better):
- detector: the change of each anchor's soft "above the score threshold" membership
  (sigmoid((score - 0.1) / 0.01), ddddocr's threshold) plus 1 - IoU of the anchor's box wherever FP32 or INT8
  scores it above the threshold: what moves boxes in or out of the F1 count;
- other models: the output noise energy relative to FP32 (1 / output SQNR).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import onnx
import ours
import run as R
from tune_auto import infer_model, metric_on

log = logging.getLogger("tune_greedy")

SCORE_THR, SOFT = 0.1, 0.01
SCALE_REL_TOL = 0.02  # an alternative rule whose amax is this close to the current one is not a move


def det_proxy(ref: list[np.ndarray], outs: list[np.ndarray]) -> float:
    """Soft flips of the score threshold plus box drift of the above-threshold anchors (see the module doc)."""
    from tune_floor import _decoded

    total = 0.0
    for r, o in zip(ref, outs):
        for pr, po in zip(r, o):
            bf, sf = _decoded(pr)
            bq, sq = _decoded(po)
            soft = lambda s: 1 / (1 + np.exp(-(s - SCORE_THR) / SOFT))  # noqa: E731
            total += float(np.abs(soft(sq) - soft(sf)).sum())
            sel = np.maximum(sf, sq) > SCORE_THR
            a, b = bf[sel], bq[sel]
            ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
            iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
            inter = ix * iy
            union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
            total += float((1 - inter / np.maximum(union, 1e-9)).sum())
    return total


def noise_proxy(ref: list[np.ndarray], outs: list[np.ndarray]) -> float:
    s = sum(float((r.astype(np.float64) ** 2).sum()) for r in ref)
    return sum(float(((r.astype(np.float64) - o) ** 2).sum()) for r, o in zip(ref, outs)) / max(s, 1e-30)


def alternatives(tables: dict[str, dict[str, float]], base: str, tensors: list[str], model: onnx.ModelProto
                 ) -> dict[str, list[str]]:
    """Per tensor, the rules (besides ``base``) whose amax differs by more than SCALE_REL_TOL; scale-tied
    outputs (they take their source's amax) get none."""
    from sppquant.calibration.tying import tie_sources

    tied = set(tie_sources(model))
    out = {}
    for t in tensors:
        if t in tied:
            continue
        a0, seen = tables[base][t], [tables[base][t]]
        rules = []
        for r, tab in tables.items():
            if r != base and t in tab and all(abs(tab[t] - a) > SCALE_REL_TOL * max(a, 1e-30) for a in seen):
                rules.append(r)
                seen.append(tab[t])
        if rules and a0 > 0:
            out[t] = rules
    return out


def state_amax(model: onnx.ModelProto, tables: dict[str, dict[str, float]], base: str, state) -> dict[str, float]:
    amax = dict(tables[base])
    for t, r in state.rules:
        amax[t] = tables[r][t]
    return ours.tie(model, amax)


def tune_model_greedy(model: onnx.ModelProto, tables: dict[str, dict[str, float]], base: str, evx: np.ndarray,
                      targets: list, spec, metric: str, max_drop: float, proxy_images: int) -> dict:
    """greedy_search on the tune split, confirmed on the held-out split; the row `tune_auto.markdown` prints."""
    from sppquant.calibration.table import CalibrationTable
    from sppquant.pipeline.tune import within_budget
    from sppquant.pipeline.tune_search import greedy_search
    from sppquant.quantize.qdq import build_qdq_model

    table = CalibrationTable.from_amax(ours.TRT_VERSION, "EntropyCalibration2", tables[base])
    tensors = list(build_qdq_model(model, table, high_precision="fp32",
                                   quantize_input_layer=ours.QUANTIZE_INPUT_LAYER)[1].activations)
    idx_t, idx_h = list(range(0, len(evx), 2)), list(range(1, len(evx), 2))
    ref_t, ref_h = infer_model(model, evx[idx_t], spec.batch), infer_model(model, evx[idx_h], spec.batch)
    tg_t, tg_h = [targets[i] for i in idx_t], [targets[i] for i in idx_h]
    fp32_t = metric_on(spec, ref_t, ref_t, tg_t)[metric]
    fp32_h = metric_on(spec, ref_h, ref_h, tg_h)[metric]
    xp, refp = evx[idx_t][:proxy_images], ref_t[:proxy_images]
    proxy_fn = det_proxy if spec.name == "ddddocr_det" else noise_proxy

    def q(state):
        return ours.qdq_model(model, state_amax(model, tables, base, state), base, keep=state.keep)

    def proxy(state) -> float:
        return proxy_fn(refp, infer_model(q(state), xp, spec.batch))

    def evaluate(state, held_out: bool = False) -> tuple[float, float]:
        x, ref, tg, f = (evx[idx_h], ref_h, tg_h, fp32_h) if held_out else (evx[idx_t], ref_t, tg_t, fp32_t)
        return f, metric_on(spec, ref, infer_model(q(state), x, spec.batch), tg)[metric]

    alts = alternatives(tables, base, tensors, model)
    t0 = time.perf_counter()
    res = greedy_search(tensors, proxy, evaluate, lambda r, g: within_budget(r, g, max_drop, metric), alts)
    search_s = time.perf_counter() - t0
    h_fp32, h_int8 = evaluate(res.state, held_out=True)
    k = len(res.state.keep)
    return {"search": "greedy", "metric": metric, "max_drop": max_drop, "quantized_tensors": len(tensors),
            "kept_high_precision": list(res.state.keep), "rule_switches": dict(res.state.rules), "k": k,
            "int8_fraction": 1 - k / max(1, len(tensors)), "curve": res.curve, "tune_fp32": fp32_t,
            "tune_met": res.met, "holdout_fp32": h_fp32, "holdout_int8": h_int8,
            "met": res.met and within_budget(h_fp32, h_int8, max_drop, metric), "evaluations": res.evaluations,
            "proxy_runs": res.proxy_runs, "proxy_images": len(xp), "search_s": search_s, "steps": res.steps,
            "alternatives": {t: v for t, v in alts.items()}, "tune_images": len(idx_t), "holdout_images": len(idx_h)}


def markdown_row(g: dict) -> str:
    """One row of tune_auto.markdown's tune table."""
    sw = len(g["rule_switches"])
    return (f"| sppquant greedy in context (proxy on {g['proxy_images']} images; {sw} rule switch(es)) | "
            f"{g['evaluations']} (+1 held-out; +{g['proxy_runs']} proxy runs) | {g['k']} of {g['quantized_tensors']} | "
            f"{g['int8_fraction']:.1%} | {g['holdout_int8']:.4f} | {g['holdout_fp32']:.4f} | {g['met']} |")


ALTERNATIVE_RULES = {"mse": ("mse", {}), "minmax": ("minmax", {}), "percentile99.999": ("percentile", {"percentile": 99.999}),
                     "percentile99.9": ("percentile", {"percentile": 99.9})}


def rule_tables(model: onnx.ModelProto, calib: np.ndarray, spec, tables: dict[str, dict[str, float]]
                ) -> dict[str, dict[str, float]]:
    """``tables`` plus the alternative rules' tables, from a histogram pass of their own (calibrate_rules keeps
    its histograms to itself)."""
    inp = model.graph.input[0].name
    hists = ours.collect_histograms(model, R.batches(calib, spec.batch, inp), threads=R.THREADS)
    out = dict(tables)
    for name, (rule, params) in ALTERNATIVE_RULES.items():
        out.setdefault(name, ours.amax_table(model, hists, rule, **params))
    return out
