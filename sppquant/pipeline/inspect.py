"""`sppquant inspect`: what a table holds and what it was computed from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sppquant.calibration.provenance import provenance_path, read_provenance, sha256_file
from sppquant.calibration.table import read_table
from sppquant.errors import TableError
from sppquant.pipeline.retarget import acceptance


def describe_table(path: str | Path, sort: str = "name") -> dict[str, Any]:
    """Table header, tensors (name, scale, amax, hex) and the provenance record if present."""
    table = read_table(path)
    warnings: list[str] = []
    try:
        record = read_provenance(path)
        provenance: dict[str, Any] | None = record.to_json()
        if record.table_sha256 != sha256_file(path):
            warnings.append("the table was changed after calibration: its provenance describes another table")
    except TableError as exc:
        provenance = None
        if provenance_path(path).exists():
            warnings.append(str(exc))
    rows = [{"name": n, "scale": s, "amax": table.amax(n)} for n, s in table.scales.items()]
    key = (lambda r: r["name"]) if sort == "name" else (lambda r: -r["amax"])
    return {"table": str(path), "header": table.header, "tensors": sorted(rows, key=key), "provenance": provenance,
            "warnings": warnings, "accepted_by": acceptance(table, path)}


def format_description(info: dict[str, Any]) -> str:
    lines = [f"table:      {info['table']}", f"header:     {info['header']}"]
    lines += [f"WARNING:    {w}" for w in info.get("warnings", [])]
    prov = info["provenance"]
    if prov is None:
        lines.append(f"provenance: none ({provenance_path(info['table']).name} missing): cannot tell what this table "
                     "was computed from")
    else:
        img = prov["images"]
        lines += [
            f"created:    {prov['created']} by sppquant {prov['sppquant_version']} ({prov['backend']})",
            f"model:      {prov['model']['path']} (sha256 {prov['model']['sha256'][:16]}...)",
            f"algorithm:  {prov['algorithm']['name']} {prov['algorithm']['params'] or ''}".rstrip(),
            f"images:     {img['used']} used of {img['count']} listed, manifest {img['manifest_sha256'][:16]}..., "
            f"{len(img['bad_files'])} bad file(s)",
            f"sizes:      {prov['input_sizes']} batch {prov['batch_size']}",
            f"preprocess: fingerprint {prov['preprocess']['fingerprint'][:16]}...",
            f"tied:       {len(prov['tying']['tied'])} tensor(s) share their input's scale"
            + (f" ({', '.join(prov['tying']['tied'])})" if prov["tying"]["tied"] else ""),
        ]
    acc = info["accepted_by"]
    lines += [f"loads in:   TensorRT {acc['tensorrt_version']} only (header version = running TensorRT's)",
              f"trtexec:    {acc['trtexec'] or 'NO: ' + acc['trtexec_problem']}",
              f"polygraphy: {acc['polygraphy']}"]
    width = max([len(r["name"]) for r in info["tensors"]] + [6])
    lines += ["", f"{'tensor':<{width}}  {'scale':>12}  {'amax':>12}"]
    lines += [f"{r['name']:<{width}}  {r['scale']:>12.6g}  {r['amax']:>12.6g}" for r in info["tensors"]]
    return "\n".join(lines)
