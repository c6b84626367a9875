"""`build --plan` for TensorRT 10 over the stubbed bindings: the plan's tensors are served without a range
(and none is derived from them), the layers reading or producing them get a float precision constraint
under PREFER_PRECISION_CONSTRAINTS, and a plan whose table is unusable is refused before any build."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sppquant.backends.tensorrt.memory import HostMemory
from sppquant.backends.tensorrt.ranges import LayerInfo, constrain_layers, derive_missing, plan_exclusion
from sppquant.calibration.table import from_bytes, read_table
from sppquant.cli import main
from sppquant.config import load_config
from sppquant.errors import UserError
from sppquant.pipeline import trt_build as B
from sppquant.pipeline import trt_settings as S
from sppquant.pipeline.calibrate import calibrate
from sppquant.pipeline.precision_plan import PrecisionPlan
from sppquant.pipeline.trt_cache import TableCache
from tests.trt_stubs.fixtures import trt, trt_bindings

FIXTURES = (trt, trt_bindings)  # pytest fixtures, used by name


def _layers() -> list[LayerInfo]:
    return [
        LayerInfo("conv1", "CONVOLUTION", ("image",), ("c1",), (True,)),
        LayerInfo("flat", "SHUFFLE", ("c1",), ("(Unnamed Layer* 1) [Shuffle]_output",), (True,)),
        LayerInfo("relu", "ACTIVATION", ("(Unnamed Layer* 1) [Shuffle]_output",), ("r1",), (True,)),
        LayerInfo("pool", "POOLING", ("r1",), ("p1",), (True,)),
        LayerInfo("cat", "CONCATENATION", ("p1", "c1"), ("cat",), (True,)),
    ]


def test_kept_tensors_and_their_reshapes_get_no_range_and_are_not_reported_missing() -> None:
    scales = {"image": 0.01, "c1": 0.02, "r1": 0.03}
    derived, missing = derive_missing(_layers(), scales, ["image"])  # without a plan: everything derivable
    assert derived == {"(Unnamed Layer* 1) [Shuffle]_output": 0.02, "p1": 0.03, "cat": 0.03} and missing == []
    excluded = plan_exclusion(_layers(), ["c1"])
    assert excluded == {"c1", "(Unnamed Layer* 1) [Shuffle]_output", "cat"}  # relu is not range-preserving
    kept = {k: v for k, v in scales.items() if k not in excluded}
    derived, missing = derive_missing(_layers(), kept, ["image"], exclude=excluded)
    assert derived == {"p1": 0.03} and missing == []


class _T:
    def __init__(self, name: str, dtype: Any) -> None:
        self.name, self.dtype = name, dtype


class _Type:
    def __init__(self, name: str) -> None:
        self.name = name


class _L:
    def __init__(self, name: str, kind: str, ins: list, outs: list) -> None:
        self.name, self.type, self.ins, self.outs = name, _Type(kind), ins, outs
        self.num_inputs, self.num_outputs = len(ins), len(outs)
        self.precision, self.output_types = None, {}

    def get_input(self, i: int) -> Any:
        return self.ins[i]

    def get_output(self, i: int) -> Any:
        return self.outs[i]

    def set_output_type(self, i: int, dtype: Any) -> None:
        self.output_types[i] = dtype


def _network(trt: ModuleType) -> tuple[Any, dict[str, _L]]:
    f = trt.float32
    image, c1, r1, c2, shape = _T("image", f), _T("conv1", f), _T("relu1", f), _T("c2", f), _T("s", trt.int64)
    layers = {"conv1": _L("conv1", "CONVOLUTION", [image, None], [c1]), "relu1": _L("relu1", "ACTIVATION", [c1], [r1]),
              "shape": _L("shape", "SHAPE", [c1], [shape]), "conv2": _L("conv2", "CONVOLUTION", [r1], [c2])}
    order = list(layers.values())
    net = type("N", (), {"num_inputs": 1, "get_input": lambda s, i: image, "num_layers": len(order),
                         "get_layer": lambda s, i: order[i]})()
    return net, layers


class _Config:
    def __init__(self, trt: ModuleType, fp16: bool) -> None:
        self.flags = {trt.BuilderFlag.INT8} | ({trt.BuilderFlag.FP16} if fp16 else set())
        self.int8_calibrator = None

    def get_flag(self, flag: Any) -> bool:
        return flag in self.flags

    def set_flag(self, flag: Any) -> None:
        self.flags.add(flag)

    def set_calibration_profile(self, profile: Any) -> bool:
        return True


@pytest.mark.parametrize("fp16", [True, False])
def test_readers_and_producers_of_kept_tensors_are_constrained(trt: ModuleType, fp16: bool) -> None:
    net, layers = _network(trt)
    config = _Config(trt, fp16)
    names = B.apply_plan_constraints(trt, net, config, {"conv1"})
    want = trt.float16 if fp16 else trt.float32
    assert names == ["conv1", "relu1"]  # the producer and the float reader; the shape layer has no float output
    assert layers["conv1"].precision == want and layers["conv1"].output_types == {0: want}
    assert layers["relu1"].precision == want and layers["relu1"].output_types == {}
    assert layers["shape"].precision is None and layers["conv2"].precision is None
    assert trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS in config.flags
    assert trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS not in config.flags
    assert constrain_layers(trt, net, set(), want) == []


def test_served_table_lacks_the_plan_tensors_and_the_layers_are_constrained(tiny_project: Path,
                                                                             trt: ModuleType) -> None:
    """The calibrator path of an INT8 build with a plan: `_attach_calibrator` over a stand-in network."""
    cfg = load_config(tiny_project)
    table_path = calibrate(cfg, algorithm="minmax", backend="onnxruntime", progress=False).table_path
    base, header = S.calibrator_base("minmax")
    cache = TableCache(cfg, table_path, "minmax", header, "10.16.1")
    sess = B.TrtSession(trt, None, type("Bld", (), {"create_optimization_profile": lambda s: _Profile()})(),
                        Path("lib.so"), "10.16.1")
    net, layers = _network(trt)
    image = net.get_input(0)
    image.shape = (-1, 3, -1, -1)
    config = _Config(trt, fp16=True)
    built = B.Built(b"", 0.0, S.profile_shapes(cfg), "image")
    calibration = B.Calibration(cache, base, HostMemory(), keep=frozenset({"conv1"}), progress=False)
    calibrator = B._attach_calibrator(sess, cfg, net, config, image, calibration, built)
    served = from_bytes(bytes(calibrator.read_calibration_cache()), "served")
    full = read_table(table_path)
    assert "conv1" in full.scales and "conv1" not in served.scales
    assert {k: v for k, v in served.scales.items() if k in full.scales} == {
        k: v for k, v in full.scales.items() if k != "conv1"}
    assert built.constrained == ["conv1", "relu1"] and trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS in config.flags
    calibrator.close()


class _Profile:
    def set_shape(self, *args: Any) -> None:
        pass


def _plan(path: Path, table: Path, keep: list[str]) -> Path:
    PrecisionPlan("m.onnx", str(table), "minmax", "top1", 0.005, 1.0, keep, [[0, 0.9]], 5, 4, 4, 1.0, 1.0,
                  True).write(path)
    return path


def test_plan_with_a_missing_table_is_refused_before_any_build(tiny_project: Path, trt: ModuleType) -> None:
    cfg = load_config(tiny_project)
    plan = _plan(tiny_project.parent / "plan.json", tiny_project.parent / "nope.cache", ["conv1"])
    out = tiny_project.parent / "engines"
    with pytest.raises(UserError, match=r"--plan .*plan.json: its table .*nope.cache is missing or stale"):
        B.build_engines(cfg, "int8", out, plan=plan)
    assert not out.exists() or not any(out.glob("*.engine"))


def test_cli_build_plan_errors_are_one_line_exit_2(tiny_project: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tiny_project.parent / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    assert main(["build", "--config", str(tiny_project), "--precision", "int8", "--plan", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.json: not a usable precision plan" in err and "\n" not in err


@pytest.mark.parametrize("fp16", [True, False])
def test_layers_around_tensors_past_fp16_range_are_constrained_to_fp32(trt: ModuleType, fp16: bool) -> None:
    net, layers = _network(trt)
    config = _Config(trt, fp16)
    B.apply_plan_constraints(trt, net, config, {"conv1"})  # a plan's FP16 constraint first ...
    names = B.apply_fp32_constraints(trt, net, config, frozenset({"conv1"}))
    if not fp16:  # an FP32 build has nothing to overflow: the plan's constraint (FP32 there) stays
        assert names == [] and layers["conv1"].precision == trt.float32
        return
    assert names == ["conv1", "relu1"]  # ... then FP32 wins for the tensor FP16 cannot hold
    assert layers["conv1"].precision == trt.float32 and layers["conv1"].output_types == {0: trt.float32}
    assert layers["relu1"].precision == trt.float32 and layers["conv2"].precision is None
    assert trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS in config.flags
    assert B.apply_fp32_constraints(trt, net, _Config(trt, True), frozenset()) == []


def test_int8_build_serves_the_table_without_the_input_side_and_records_it(tiny_project: Path, trt: ModuleType,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`calibration.input_layer: float` (default): the INT8 build's calibration keeps the input side (the image)
    out of the served table; `int8` puts it back. `build_one` is replaced: the stubs cannot build."""
    seen: list[B.Calibration | None] = []

    def fake_build_one(sess, cfg, flags, what, *, calibration=None, dummy_ranges=False, timing=None,
                       fp32_tensors=frozenset()):
        seen.append(calibration)
        return B.Built(b"engine", 0.1, S.profile_shapes(cfg), "image", source="reused")

    sess = type("Sess", (), {"version": "10.16.1", "plugin": Path("lib.so")})()
    monkeypatch.setattr(B, "build_one", fake_build_one)
    monkeypatch.setattr(B.TrtSession, "open", staticmethod(lambda cfg: sess))
    monkeypatch.setattr(B, "gpu_name", lambda: "stub")
    for value, want in (("float", {"image"}), ("int8", set())):
        cfg = load_config(tiny_project, ["calibration.algorithm=minmax", f"calibration.input_layer={value}"])
        calibrate(cfg, backend="onnxruntime", progress=False)
        records = B.build_engines(cfg, "int8", tiny_project.parent / f"engines_{value}")
        assert set(seen[-1].keep) == want and records[0].input_side == sorted(want)
