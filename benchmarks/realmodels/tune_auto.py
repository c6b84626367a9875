"""`auto` and `tune` on the real models: task metric, SQNR, calibration time vs entropy2, tune plan + curve.

    python benchmarks/realmodels/tune_auto.py --models ddddocr_rec --calib 32 --eval 96 [--max-drop 0.005]

Same models, tensors and metrics as run.py (one histogram pass shared by every rule). Per model:

- calibration time of entropy2, percentile (the default) and auto = the histogram pass + the rule(s)
  + (auto) sppquant's per-tensor output contest (`pick_rules`, its default 16 calibration images)
  + the Q/DQ export;
- task metric and output SQNR of each on the eval set;
- tune from the auto table: eval images split even/odd (tune / held-out), quantized tensors ranked by
  output SQNR when quantized alone (on ``--rank-images`` tune images), then sppquant's doubling +
  bisection search (`search_smallest_k`) on the task metric, confirmed on the held-out half.

Writes results/tune_<model>.json, results/tune_<model>.plan.json and results/tune_<model>.png
(with --no-tune: results/auto_<model>.{json,md}).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ours  # noqa: E402
import run as R  # noqa: E402

log = logging.getLogger("tune_auto")
TUNE_METRIC = {"ddddocr_rec": "exact_match", "ddddocr_det": "box_f1_fp32", "effnet_lite0": "top1_agree_fp32",
               "captcha_crnn": "exact_match"}


def metric_on(spec, ref: list[np.ndarray], outs: list[np.ndarray], targets: list) -> dict[str, float]:
    """The task metric on a subset: metrics scored vs FP32 keep the first call's outputs as reference, so each
    subset gets a fresh metric object fed the FP32 outputs first."""
    m = type(spec.metric)() if hasattr(spec.metric, "ref") else spec.metric
    if hasattr(m, "ref"):
        m(ref, targets)
    return m(outs, targets)


@contextlib.contextmanager
def _runner(model: onnx.ModelProto):
    yield ours.runner(model, threads=R.THREADS)


def infer_model(model: onnx.ModelProto, x: np.ndarray, bs: int) -> list[np.ndarray]:
    r = ours.runner(model, threads=R.THREADS)
    out = model.graph.output[0].name
    return [r.run({model.graph.input[0].name: x[i:i + bs]}, [out])[out] for i in range(0, len(x), bs)]


def calibrate_rules(model: onnx.ModelProto, calib: np.ndarray, spec, compare_prune: bool = False,
                    auto_images: int = 16, skip_auto: bool = False, auto_method: str = "joint") -> tuple[dict, dict]:
    """amax tables and wall times of entropy2, percentile (default) and auto from one histogram pass."""
    from sppquant.calibration.algorithms import get_algorithm
    from sppquant.calibration.tying import tie_sources
    from sppquant.pipeline.auto import pick_rules, quantized_tensors

    inp = model.graph.input[0].name
    t0 = time.perf_counter()
    hists, means = ours.collect(model, R.batches(calib, spec.batch, inp), threads=R.THREADS)
    t_hist = time.perf_counter() - t0
    tables, times, per_rule = {}, {}, {}
    for rule in ("entropy2", "percentile"):
        t1 = time.perf_counter()
        tables[rule] = ours.amax_table(model, hists, rule)
        ours.qdq_model(model, tables[rule], rule)
        times[rule] = t_hist + time.perf_counter() - t1
        times[f"{rule}_rule"] = time.perf_counter() - t1
        per_rule[rule] = tables[rule]
    times["percentile+bc"] = times["percentile"]  # the same table, bias-corrected export
    t1 = time.perf_counter()
    rounded = ours.gptq(model, R.batches(calib[:ours.GPTQ_IMAGES], spec.batch, inp), threads=R.THREADS)
    times["gptq_s"] = time.perf_counter() - t1
    times["percentile+gptq"] = times["percentile"] + times["gptq_s"]  # the product default now
    extra = {"means": means, "rounded": rounded}
    if skip_auto:
        return tables, {"times": times, "hist_s": t_hist, "auto_images": 0, **extra}
    if auto_method == "joint":
        tables, cal = auto_joint(model, calib, spec, hists, tables, times, t_hist, auto_images)
        cal["times"]["auto+gptq"] = cal["times"]["auto"] + times["gptq_s"]
        return tables, {**cal, **extra}
    t1 = time.perf_counter()
    cands = get_algorithm("auto").candidates
    for rule in cands:
        if rule not in per_rule:
            per_rule[rule] = ours.amax_table(model, hists, rule)
    feeds = lambda: list(R.batches(calib[:auto_images], spec.batch, inp))  # noqa: E731
    outputs = [o.name for o in model.graph.output]
    tied = {o for o, src in tie_sources(model).items() if src in per_rule[cands[0]]}
    choice = pick_rules(model, per_rule, cands, feeds, outputs, _runner, progress=True, hists=hists, tied=tied,
                        only=quantized_tensors(model, per_rule[cands[0]]))
    tables["auto"] = ours.tie(model, dict(choice.amax))
    ours.qdq_model(model, tables["auto"], "auto")
    times["auto"] = t_hist + time.perf_counter() - t1
    counts = {r: sum(1 for v in choice.rules.values() if v == r) for r in cands}
    extra = {}
    if compare_prune:  # the same contest without pruning: its time, and how many tensors end with another scale
        t2 = time.perf_counter()
        full = pick_rules(model, per_rule, cands, feeds, outputs, _runner, progress=True)
        tables["auto-unpruned"] = ours.tie(model, dict(full.amax))
        times["auto-unpruned"] = t_hist + time.perf_counter() - t2
        extra["unpruned_differs"] = sum(tables["auto"][n] != tables["auto-unpruned"][n] for n in tables["auto"])
    return tables, {**extra, "auto_images": auto_images, "times": times, "hist_s": t_hist, "auto_rules": counts, "contested": len(choice.scores),
                    "pruned": sum(len(v) for v in choice.pruned.values())}


def fp32_agreement(name: str, ref: list[np.ndarray], outs: list[np.ndarray]) -> dict[str, float]:
    """Recognizer only: the fraction of eval images whose INT8 text equals the FP32 model's text (case-insensitive).
    On 160 images exact match moves by 0.6 point per image, and INT8 can be right where FP32 is wrong; this
    says how far each INT8 model is from the FP32 one, which is what calibration controls."""
    if name != "ddddocr_rec":
        return {}
    import models as M

    fp32 = [t.lower() for o in ref for t in M.ctc_decode(o)]
    return {"agree_fp32": float(np.mean([a.lower() == b for o, b in zip(outs, fp32) for a in M.ctc_decode(o)]))}


def auto_joint(model: onnx.ModelProto, calib: np.ndarray, spec, hists: dict, tables: dict, times: dict,
               t_hist: float, auto_images: int) -> tuple[dict, dict]:
    """sppquant's ``auto`` (`pick_rules_joint`) as the pipeline runs it: its time = the histogram pass + every
    candidate's thresholds + the joint contest + the export, the contest under a budget of the histogram pass's
    own time less the thresholds' (so auto <= 2x entropy2 by construction)."""
    from sppquant.calibration.algorithms import get_algorithm
    from sppquant.calibration.tying import tie_sources
    from sppquant.pipeline.auto_joint import pick_rules_joint

    t1 = time.perf_counter()
    cands = get_algorithm("auto").candidates
    per_rule = {r: tables[r] if r in tables else ours.amax_table(model, hists, r) for r in cands}
    shared = times["entropy2_rule"] + times["percentile_rule"]  # computed once above, auto needs them too
    budget = max(0.0, t_hist - shared - (time.perf_counter() - t1))
    inp, outputs = model.graph.input[0].name, [o.name for o in model.graph.output]
    ties = {o: src for o, src in tie_sources(model).items() if src in per_rule[cands[0]]}
    choice = pick_rules_joint(model, per_rule, cands, lambda: list(R.batches(calib[:auto_images], spec.batch, inp)),
                              outputs, _runner, budget, hists, ties)
    tables["auto"] = ours.tie(model, dict(choice.amax))
    ours.qdq_model(model, tables["auto"], "auto")
    times["auto"] = t_hist + shared + time.perf_counter() - t1
    quantized = [n for n in choice.why if not choice.why[n].startswith("not contested")]
    counts = {r: sum(1 for n in quantized if choice.rules[n] == r) for r in cands}
    return tables, {"auto_images": auto_images, "times": times, "hist_s": t_hist, "auto_rules": counts,
                    "auto_method": "joint", "budget_s": budget, "start": choice.start, "table_db": choice.table_scores,
                    "runs": choice.runs, "skipped": choice.skipped, "trials": choice.trials, "contest_db": choice.final_db,
                    "contested": sum(1 for n in quantized if not choice.why[n].startswith("not contested")),
                    "moved": {n: choice.why[n] for n in quantized if choice.rules[n] != choice.start},
                    "pruned": sum(len(v) for v in choice.pruned.values())}


def tune_model(model: onnx.ModelProto, amax: dict, evx: np.ndarray, targets: list, spec, metric: str,
               max_drop: float, rank_images: int, weights: dict | None = None) -> dict:
    """sppquant's tune search on the benchmark tensors (see the module docstring); ``weights``: the INT8
    weights' ``means`` / ``rounded`` as the product default builds them (None: round to nearest)."""
    weights = weights or {}
    from sppquant.calibration.table import CalibrationTable
    from sppquant.pipeline.auto import output_sqnr_alone
    from sppquant.pipeline.tune import search_smallest_k, within_budget
    from sppquant.quantize.qdq import build_qdq_model

    table = CalibrationTable.from_amax(ours.TRT_VERSION, "EntropyCalibration2", amax)
    _, info = build_qdq_model(model, table, high_precision="fp32", quantize_input_layer=ours.QUANTIZE_INPUT_LAYER)
    quantized = list(info.activations)  # the tensors the default Q/DQ model quantizes
    idx_t, idx_h = list(range(0, len(evx), 2)), list(range(1, len(evx), 2))
    inp, outputs = model.graph.input[0].name, [o.name for o in model.graph.output]
    t0 = time.perf_counter()
    rank_feeds = list(R.batches(evx[idx_t][:rank_images], spec.batch, inp))
    with _runner(model) as fp32:
        refs = [fp32.run(f, outputs) for f in rank_feeds]
    sens = output_sqnr_alone(model, amax, quantized, rank_feeds, refs, outputs, _runner)
    ranked = sorted(quantized, key=lambda n: sens[n])  # most sensitive (lowest output SQNR) first
    t_rank = time.perf_counter() - t0
    ref_t = infer_model(model, evx[idx_t], spec.batch)
    ref_h = infer_model(model, evx[idx_h], spec.batch)
    tg_t, tg_h = [targets[i] for i in idx_t], [targets[i] for i in idx_h]
    fp32_t, fp32_h = metric_on(spec, ref_t, ref_t, tg_t)[metric], metric_on(spec, ref_h, ref_h, tg_h)[metric]
    evals = {"n": 0}

    def evaluate_k(k: int, held_out: bool = False) -> tuple[float, float]:
        evals["n"] += 1
        q = ours.qdq_model(model, amax, "auto", keep=ranked[:k], **weights)  # kept tensors: FP32, like the rest
        x, ref, tg, f = (evx[idx_h], ref_h, tg_h, fp32_h) if held_out else (evx[idx_t], ref_t, tg_t, fp32_t)
        return f, metric_on(spec, ref, infer_model(q, x, spec.batch), tg)[metric]

    t1 = time.perf_counter()
    k, curve, _ = search_smallest_k(evaluate_k, len(ranked), max_drop, metric)
    h_fp32, h_int8 = evaluate_k(k, held_out=True)
    search_s, tune_evals = time.perf_counter() - t1, evals["n"]
    poly = polygraphy_bisect(model, quantized, lambda keep: metric_on(
        spec, ref_t, infer_model(ours.qdq_model(model, amax, "auto", keep=keep, **weights), evx[idx_t], spec.batch), tg_t)[metric],
        fp32_t, max_drop, lambda keep: metric_on(
        spec, ref_h, infer_model(ours.qdq_model(model, amax, "auto", keep=keep, **weights), evx[idx_h], spec.batch), tg_h)[metric])
    evals["n"] = tune_evals
    return {"polygraphy_bisect": poly, "metric": metric, "max_drop": max_drop, "quantized_tensors": len(ranked), "kept_high_precision": ranked[:k],
            "k": k, "int8_fraction": 1 - k / max(1, len(ranked)), "curve": curve, "tune_fp32": fp32_t,
            "holdout_fp32": h_fp32, "holdout_int8": h_int8, "met": within_budget(h_fp32, h_int8, max_drop, metric),
            "evaluations": evals["n"], "rank_runs": len(quantized), "rank_s": t_rank,
            "search_s": search_s, "tune_images": len(idx_t), "holdout_images": len(idx_h),
            "sensitivity_db": {n: sens[n] for n in ranked[:max(k, 10)]}}


RSS_CAP_MB = 10_000  # a peer past this is stopped (the machine is shared); its row says so


def _run_capped(cmd: list[str], cwd: Path):
    """Run ``cmd``; stop it when its resident memory passes RSS_CAP_MB (ORT's entropy calibrator grows without
    bound on large activations)."""
    import subprocess
    import tempfile
    import types

    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, text=True, cwd=cwd)
        capped = False
        while proc.poll() is None:
            time.sleep(1.0)
            try:
                rss = next(int(x.split()[1]) for x in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                           if x.startswith("VmRSS")) / 1024
            except (OSError, StopIteration):
                continue
            if rss > RSS_CAP_MB:
                proc.kill()
                capped = True
        so.seek(0)
        se.seek(0)
        err = se.read() + (f"\nstopped past {RSS_CAP_MB} MB resident memory" if capped else "")
        return types.SimpleNamespace(returncode=proc.wait(), stdout=so.read(), stderr=err)


def modelopt_rows(name: str, model: onnx.ModelProto, calib: np.ndarray, evx: np.ndarray, targets: list, ref: list,
                  spec, python: str) -> dict:
    """ModelOpt int8 (entropy, max) on the same prepared model and calibration tensors, in its own env."""
    out = R.RESULTS / "models"
    out.mkdir(parents=True, exist_ok=True)
    src, npy = out / f"{name}.fp32.prepared.onnx", out / f"{name}.calib.npy"
    onnx.save(model, str(src))
    np.save(npy, calib)
    rows = {}
    for method in ("entropy", "max"):
        dst = out / f"{name}.modelopt.{method}.onnx"
        t0 = time.perf_counter()
        p = _run_capped([python, str(HERE / "modelopt_peer.py"), "--onnx", str(src), "--calib", str(npy),
                         "--method", method, "--out", str(dst)], out)
        line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode != 0 or not line:
            why = (p.stderr.strip().splitlines() or ["?"])[-1][:300]
            rows[f"modelopt-{method}"] = {"error": f"rc {p.returncode}: {why}", "wall_s": time.perf_counter() - t0}
            log.error("modelopt %s on %s failed: %s", method, name, why)
            continue
        r = json.loads(line[-1][7:])
        outs = infer_model(onnx.load(str(dst)), evx, spec.batch)
        rows[f"modelopt-{method}"] = {**metric_on(spec, ref, outs, targets), "sqnr_db": R.sqnr_db(ref, outs),
                                      "calib_s": r["calib_s"], "rss_mb": r["rss_mb"]}
        log.info("%s modelopt %s: %s", name, method, rows[f"modelopt-{method}"])
    return rows


def polygraphy_bisect(model: onnx.ModelProto, quantized: list[str], metric_with, fp32: float, max_drop: float,
                     holdout_with) -> dict:
    """Polygraphy's `debug precision` search (its own BisectMarker, forward direction: a PREFIX of the layers in
    network order runs in higher precision) replayed on these Q/DQ models in ONNX Runtime: the 'layers' are the
    quantized tensors in graph order and each check is the same task metric on the same tune split. Polygraphy
    itself builds a TensorRT engine per check and cannot run here (no TensorRT)."""
    from polygraphy.tools.debug.subtool.precision import BisectMarker

    order = {t: i for i, nd in enumerate(model.graph.node) for t in nd.output}
    layers = sorted(quantized, key=lambda t: order.get(t, -1))  # graph inputs first
    marker, evals, log_ = BisectMarker(len(layers), "forward"), 0, []
    while True:
        keep = [layers[i] for i in marker.select_layers()]
        got = metric_with(keep)
        evals += 1
        ok = fp32 - got <= max_drop + 1e-12
        log_.append([len(keep), got])
        if marker.step(ok):
            break
    kept = layers[:marker.good] if marker.good <= len(layers) else layers
    return {"evaluations": evals, "kept": len(kept), "of": len(layers), "curve": log_,
            "holdout": holdout_with(kept), "found": marker.good <= len(layers)}


def write_plot(name: str, res: dict, algorithm: str = "auto", stem: str | None = None) -> Path:
    from sppquant.pipeline.tune import PrecisionPlan, plot_curve

    plan = PrecisionPlan(name, "-", algorithm, res["metric"], res["max_drop"], res["tune_fp32"],
                         res["kept_high_precision"], res["curve"], res["quantized_tensors"], res["tune_images"],
                         res["holdout_images"], res["holdout_fp32"], res["holdout_int8"], res["met"],
                         search=res.get("search", "ranked-bisection"), evaluations=res.get("evaluations", 0) + 1,
                         proxy_runs=res.get("proxy_runs", 0))
    stem = stem or f"tune_{name}"
    plan.write(R.RESULTS / f"{stem}.plan.json")
    png = R.RESULTS / f"{stem}.png"
    png.write_bytes(plot_curve(plan))
    return png


def bench(name: str, args: argparse.Namespace) -> dict:
    spec = R.load_spec(name)
    model = ours.prepare(onnx.load(str(spec.path())))
    calib, evx, targets = R.data(name, args.calib, args.eval)
    tables, cal = calibrate_rules(model, calib, spec, args.compare_prune, args.auto_images, args.tune_from != "auto",
                                  args.auto_method)
    ref = infer_model(model, evx, spec.batch)
    rows = {"fp32": {**metric_on(spec, ref, ref, targets), "sqnr_db": float("inf")}}
    means, rounded = cal.pop("means", None), cal.pop("rounded", None)
    variants = [(rule, amax, None, None) for rule, amax in tables.items()]
    if means is not None and "percentile" in tables:
        variants.append(("percentile+bc", tables["percentile"], means, None))
        variants.append(("percentile+gptq", tables["percentile"], means, rounded))
    if "auto" in tables and "auto+gptq" in cal["times"]:
        variants.append(("auto+gptq", tables["auto"], means, rounded))
    for rule, amax, m, rw in variants:
        base = "auto" if rule.startswith("auto") else rule.split("+")[0]
        outs = infer_model(ours.qdq_model(model, amax, base, means=m, rounded=rw), evx, spec.batch)
        rows[rule] = {**metric_on(spec, ref, outs, targets), "sqnr_db": R.sqnr_db(ref, outs),
                      "calib_s": cal["times"][rule], **fp32_agreement(name, ref, outs)}
        log.info("%s %s: %s", name, rule, rows[rule])
    if args.modelopt_python:
        rows.update(modelopt_rows(name, model, calib, evx, targets, ref, spec, args.modelopt_python))
    res = {"model": name, "calib_images": len(calib), "eval_images": len(evx), "rows": rows, **cal}
    if not args.no_tune and args.search in ("both", "greedy"):
        res["tune_greedy"] = greedy_tune(model, tables[args.tune_from], calib, evx, targets, spec, name, args)
    if not args.no_tune and args.search in ("both", "bisect"):
        res["tune"] = tune_model(model, tables[args.tune_from], evx, targets, spec, TUNE_METRIC[name], args.max_drop,
                                 args.rank_images, {"means": means, "rounded": rounded})
        res["tune"]["table"] = args.tune_from
        res["tune"]["png"] = str(write_plot(name, res["tune"], args.tune_from, _stem(name, args)).relative_to(HERE))
        log.info("%s tune: k=%d of %d, held-out %s %.4f vs FP32 %.4f, met=%s", name, res["tune"]["k"],
                 res["tune"]["quantized_tensors"], res["tune"]["metric"], res["tune"]["holdout_int8"],
                 res["tune"]["holdout_fp32"], res["tune"]["met"])
    return res


def greedy_tune(model: onnx.ModelProto, amax: dict, calib: np.ndarray, evx: np.ndarray, targets: list, spec, name: str,
                args: argparse.Namespace) -> dict:
    """tune's greedy in-context search from the ``--tune-from`` table (tune_greedy.py), its plan and curve."""
    import tune_greedy

    tables = tune_greedy.rule_tables(model, calib, spec, {args.tune_from: amax})
    g = tune_greedy.tune_model_greedy(model, tables, args.tune_from, evx, targets, spec, TUNE_METRIC[name],
                                      args.max_drop, args.proxy_images)
    g["table"] = args.tune_from
    g["png"] = str(write_plot(name, g, args.tune_from, _stem(name, args) + "_greedy").relative_to(HERE))
    log.info("%s greedy tune: k=%d of %d (%d switches), held-out %.4f vs FP32 %.4f, met=%s, %d evaluations, "
             "%d proxy runs", name, g["k"], g["quantized_tensors"], len(g["rule_switches"]), g["holdout_int8"],
             g["holdout_fp32"], g["met"], g["evaluations"], g["proxy_runs"])
    return g


def markdown(res: dict) -> str:
    """The RESULTS.md tables of one model's run."""
    rows, metric = res["rows"], TUNE_METRIC[res["model"]]
    e2 = rows["entropy2"]["calib_s"]
    out = [f"{res['date']}, {res['machine']}, `{res['command']}` ({res['calib_images']} calibration / "
           f"{res['eval_images']} eval images" + (f"; auto's output contest on {res['auto_images']} calibration images"
                                                  if res["auto_images"] else "") + "), "
           f"wall {res['wall_s']:.0f} s.", "",
           f"| variant | {metric} | SQNR vs FP32 (dB) | calib time (s) | vs entropy2 time |" + (
               " same text as FP32 |" if "agree_fp32" in rows.get("entropy2", {}) else ""),
           "|---|---|---|---|---|" + ("---|" if "agree_fp32" in rows.get("entropy2", {}) else "")]
    for key, r in rows.items():
        if "error" in r:
            out.append(f"| {key} | FAILED: {r['error']} | | | |")
            continue
        t = r.get("calib_s")
        out.append(f"| {key} | {r[metric]:.4f} | {r['sqnr_db']:.1f} | {'-' if t is None else f'{t:.1f}'} | "
                   f"{'-' if t is None or key.startswith('modelopt') else f'{t / e2:.2f}x'} |" + (
                       f" {r['agree_fp32']:.4f} |" if "agree_fp32" in r else " - |" if "agree_fp32" in rows.get(
                           "entropy2", {}) else ""))
    if "auto_rules" in res:
        out += ["", f"auto: rules per tensor {res['auto_rules']}, {res['contested']} tensors contested, "
                    f"{res.get('pruned', 0)} rule(s) pruned locally; histogram pass {res['hist_s']:.1f} s."]
    if res.get("auto_method") == "joint":
        out += ["", f"auto (joint, budget {res['budget_s']:.1f} s): whole tables "
                    f"{ {r: round(v, 2) for r, v in res['table_db'].items()} } dB on the contest images, start "
                    f"{res['start']}; {res['runs']} runs, {len(res['moved'])} tensor(s) moved off the start, "
                    f"{res['skipped']} move(s) not tried (budget); contest output SQNR {res['contest_db']:.2f} dB."]
        out += [f"- `{n}`: {why}" for n, why in res["moved"].items()]
    if "tune_greedy" in res:
        out += ["", greedy_markdown(res["tune_greedy"])]
    if "tune" in res:
        t, pg = res["tune"], res["tune"]["polygraphy_bisect"]
        out += ["", f"| tune --max-drop {t['max_drop']} ({t['metric']}, from the {t.get('table', 'auto')} table) | evaluations | kept above INT8 | INT8 "
                    "fraction | held-out INT8 | held-out FP32 | met |", "|---|---|---|---|---|---|---|",
                f"| sppquant (ranked by output SQNR alone, doubling + bisection) | {len(t['curve'])} (+1 held-out; "
                f"+{t['rank_runs']} single-tensor ranking runs) | {t['k']} of {t['quantized_tensors']} | {t['int8_fraction']:.1%} | "
                f"{t['holdout_int8']:.4f} | {t['holdout_fp32']:.4f} | {t['met']} |",
                f"| Polygraphy `debug precision` bisect, forward (its BisectMarker replayed in ORT) | {pg['evaluations']}"
                f" (+1 held-out) | {pg['kept']} of {pg['of']} | {1 - pg['kept'] / max(1, pg['of']):.1%} | {pg['holdout']:.4f} | "
                f"{t['holdout_fp32']:.4f} | {t['holdout_fp32'] - pg['holdout'] <= t['max_drop'] + 1e-12} |",
                "", f"Curve: `{t['png']}`; tune split {t['tune_images']} / held-out {t['holdout_images']} images; "
                    f"kept: {', '.join(t['kept_high_precision']) or 'none'}."]
    return "\n".join(out) + "\n"


def greedy_markdown(g: dict) -> str:
    import tune_greedy

    return "\n".join([f"| tune --max-drop {g['max_drop']} ({g['metric']}, from the {g['table']} table) | evaluations | "
                      "kept above INT8 | INT8 fraction | held-out INT8 | held-out FP32 | met |", "|---|---|---|---|---|---|---|",
                      tune_greedy.markdown_row(g), "", f"Curve: `{g['png']}`; kept: {', '.join(g['kept_high_precision']) or 'none'}; "
                      f"rule switches: {g['rule_switches'] or 'none'}; search {g['search_s']:.0f} s."])


def _stem(name: str, args: argparse.Namespace) -> str:
    if args.no_tune:  # auto's rows only: not the tune results' files (other image counts: their own files)
        default = (args.calib, args.eval) == (32, 160 if name == "ddddocr_rec" else 80)
        return f"auto_{name}" + ("" if default else f"_c{args.calib}_e{args.eval}")
    return f"tune_{name}" + ("" if args.tune_from == "auto" else f"_{args.tune_from}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ddddocr_rec,ddddocr_det")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=96)
    ap.add_argument("--max-drop", type=float, default=0.005, help="metric drop budget as a fraction (0.005 = 0.5 pt)")
    ap.add_argument("--rank-images", type=int, default=8, help="tune-split images for the sensitivity ranking")
    ap.add_argument("--no-tune", action="store_true")
    ap.add_argument("--tune-from", choices=["auto", "percentile"], default="auto",
                    help="the table tune starts from (percentile: auto is not computed)")
    ap.add_argument("--markdown", help="only re-render results/tune_<model>.md from an existing results JSON")
    ap.add_argument("--modelopt-python", help="python of an env with nvidia-modelopt: adds ModelOpt int8 rows")
    ap.add_argument("--auto-images", type=int, help="calibration images of auto's output contest (default: "
                                                    "sppquant's JOINT_IMAGES for joint, AUTO_IMAGES = 16 for alone)")
    ap.add_argument("--auto-method", choices=["joint", "alone"], default="joint",
                    help="joint: the pipeline's auto (pick_rules_joint, time-budgeted); alone: the per-tensor contest")
    ap.add_argument("--search", choices=["both", "greedy", "bisect"], default="both",
                    help="tune searches to run: greedy in context (tune_greedy.py), the ranked bisection + Polygraphy's")
    ap.add_argument("--proxy-images", type=int, default=8, help="tune-split images for the greedy search's proxy")
    ap.add_argument("--compare-prune", action="store_true", help="also run auto without pruning (time, choices)")
    args = ap.parse_args()
    if args.auto_images is None:
        from sppquant.pipeline.auto import AUTO_IMAGES
        from sppquant.pipeline.auto_joint import JOINT_IMAGES
        args.auto_images = JOINT_IMAGES if args.auto_method == "joint" else AUTO_IMAGES
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    R.RESULTS.mkdir(exist_ok=True)
    if args.markdown:
        res = json.loads(Path(args.markdown).read_text())
        Path(args.markdown).with_suffix(".md").write_text(markdown(res))
        return
    cmd = "python benchmarks/realmodels/tune_auto.py " + " ".join(sys.argv[1:])
    for name in args.models.split(","):
        t0 = time.perf_counter()
        res = bench(name, args)
        res.update(command=cmd, wall_s=time.perf_counter() - t0, machine=f"{platform.node()} ({os.cpu_count()} cores)",
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        (R.RESULTS / f"{_stem(name, args)}.json").write_text(json.dumps(res, indent=1, default=float))
        (R.RESULTS / f"{_stem(name, args)}.md").write_text(markdown(res))
        log.info("%s done in %.0f s", name, res["wall_s"])


if __name__ == "__main__":
    main()
