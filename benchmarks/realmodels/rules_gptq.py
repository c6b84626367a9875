"""Every threshold rule on the same histograms, each with the default INT8 weights (GPTQ + bias correction where
nearest): is percentile 99.99 still the right default once the weights are fixed?

    python benchmarks/realmodels/rules_gptq.py ddddocr_det 32 240     # model, calibration images, eval images
"""
import sys

sys.path.insert(0, "/work/main/benchmarks/realmodels")
import onnx
import ours
import run as R
from mse import mse_amax
from tune_auto import GPTQ_IMAGES, infer_model, metric_on

name = sys.argv[1]; nc, ne = int(sys.argv[2]), int(sys.argv[3])
spec = R.load_spec(name); model = ours.prepare(onnx.load(str(spec.path())))
calib, evx, targets = R.data(name, nc, ne); inp = model.graph.input[0].name
hists, means = ours.collect(model, R.batches(calib, spec.batch, inp))
rw = ours.gptq(model, R.batches(calib[:GPTQ_IMAGES], spec.batch, inp))
ref = infer_model(model, evx, spec.batch)
rules = {"percentile99.9": ("percentile", {"percentile": 99.9}), "percentile99.99": ("percentile", {}),
         "percentile99.999": ("percentile", {"percentile": 99.999}), "entropy2": ("entropy2", {}), "minmax": ("minmax", {}), "mse": ("mse", {})}
for label, (algo, params) in rules.items():
    if algo == "mse":
        amax = {}
        for n, h in hists.items():
            if h.count:
                c, w, m = ours.histogram_arrays(h); amax[n] = mse_amax(c, w, m)
        amax = ours.tie(model, amax)
    else:
        amax = ours.amax_table(model, hists, algo, **params)
    outs = infer_model(ours.qdq_model(model, amax, algo, means=means, rounded=rw), evx, spec.batch)
    print(f"{name} {label:18s} {R.sqnr_db(ref, outs):6.2f} dB", {k: round(v, 4) for k, v in metric_on(spec, ref, outs, targets).items()}, flush=True)
