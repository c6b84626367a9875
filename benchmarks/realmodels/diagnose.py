"""Summarise the per-tensor diagnostics run.py wrote (results/<model>.sppquant.tensors.json).

    python benchmarks/realmodels/diagnose.py [--top 8]

For each model and rule: median amax/max|x|, the tensors with the lowest local SQNR (quantizing
that tensor alone, estimated from its 2048-bin |x| histogram), their clipped fraction and amax ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
log = logging.getLogger("realmodels.diagnose")


def summarise(path: Path, top: int) -> str:
    data = {n: t for n, t in json.loads(path.read_text()).items()
            if t.get("producer") != "Constant" and "/Constant" not in n}  # constants are not activations
    rules = sorted({r for t in data.values() for r in t["rules"]})
    lines = [f"### {path.name.split('.')[0]} ({len(data)} tensors)", "",
             "| rule | median amax/max | median clip % | max clip % | median local SQNR (dB) | min local SQNR (dB) |",
             "|---|---|---|---|---|---|"]
    for r in rules:
        rows = [t["rules"][r] for t in data.values() if r in t["rules"] and t["rules"][r]["local_sqnr_db"] is not None]
        ratio = [x["amax_over_max"] for x in rows if x["amax_over_max"] is not None]
        clip = [100 * x["clip_frac"] for x in rows]
        sq = [x["local_sqnr_db"] for x in rows]
        lines.append(f"| {r} | {np.median(ratio):.3f} | {np.median(clip):.4f} | {max(clip):.2f} | "
                     f"{np.median(sq):.1f} | {min(sq):.1f} |")
    lines += ["", f"Worst {top} tensors under entropy2 (lowest local SQNR), vs the other rules:", "",
              "| tensor | producer -> consumers | max abs | zeros % | e2 amax/max | e2 clip % | e2 SQNR | p99.99 SQNR | mse amax/max | mse SQNR |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    ent = [(n, t) for n, t in data.items() if "entropy2" in t["rules"] and t["rules"]["entropy2"]["local_sqnr_db"]]
    ent.sort(key=lambda nt: nt[1]["rules"]["entropy2"]["local_sqnr_db"])
    for n, t in ent[:top]:
        e, p, m = t["rules"]["entropy2"], t["rules"].get("percentile99.99", {}), t["rules"].get("mse", {})
        flow = f"{t.get('producer', '?')} -> {','.join(t.get('consumers', [])) or 'output'}"
        lines.append(f"| `{n[-40:]}` | {flow} | {t['max_abs']:.3g} | {100 * t['zero_frac']:.1f} | {e['amax_over_max']:.3f} | "
                     f"{100 * e['clip_frac']:.2f} | {e['local_sqnr_db']:.1f} | {p.get('local_sqnr_db', float('nan')):.1f} | "
                     f"{m.get('amax_over_max', float('nan')):.3f} | {m.get('local_sqnr_db', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    files = sorted((HERE / "results").glob("*.sppquant.tensors.json"))
    text = "\n".join(summarise(f, args.top) for f in files)
    (HERE / "results" / "diagnostics.md").write_text(text)
    log.info("%s", text)


if __name__ == "__main__":
    main()
