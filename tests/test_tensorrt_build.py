"""TensorRT API names, the config -> builder settings mapping, table decisions, CLI.

Everything up to the point where TensorRT needs a real Builder runs against the real
bindings (native libraries stubbed); engine builds and engine runs are skipped.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import sppquant.backends.tensorrt as trt_pkg
from sppquant.backends.tensorrt.builder import add_profile, apply_flags, set_dummy_ranges
from sppquant.backends.tensorrt.memory import HostMemory
from sppquant.backends.tensorrt.ranges import RANGE_PRESERVING_LAYERS, LayerInfo, derive_missing
from sppquant.backends.tensorrt.runner import TrtRunner
from sppquant.cli import main
from sppquant.config import config_from_dict, load_config
from sppquant.errors import BackendUnavailable, ModelError, TableError, UserError
from sppquant.pipeline import trt_settings as S
from sppquant.pipeline.calibrate import calibrate
from sppquant.pipeline.trt_build import build_engines, table_decision
from sppquant.pipeline.trt_cache import TableCache
from tests.conftest import with_algorithm, write_tiny_spp_model
from tests.trt_stubs import STUBBED_SYMBOLS, StubsUnavailable, undefined_trt_symbols
from tests.trt_stubs.fixtures import NEEDS_NATIVE, trt, trt_bindings

FIXTURES = (trt, trt_bindings)  # pytest fixtures, used by name

PKG = Path(trt_pkg.__file__).parent

# Methods/properties the package calls on TensorRT objects (not visible as ``trt.X``).
USED_MEMBERS = {
    "Builder": ["create_network", "create_builder_config", "create_optimization_profile", "build_serialized_network"],
    "IBuilderConfig": ["set_flag", "set_memory_pool_limit", "add_optimization_profile", "set_calibration_profile",
                       "int8_calibrator", "create_timing_cache", "set_timing_cache", "get_flag"],
    "IOptimizationProfile": ["set_shape"],
    "OnnxParser": ["parse_from_file", "parse", "num_errors", "get_error"],
    "INetworkDefinition": ["num_inputs", "get_input", "num_layers", "get_layer"],
    "ILayer": ["name", "type", "num_inputs", "num_outputs", "get_input", "get_output", "precision", "set_output_type"],
    "ITensor": ["name", "shape", "dtype", "dynamic_range"],
    "ITimingCache": ["serialize"],
    "Runtime": ["deserialize_cuda_engine"],
    "ICudaEngine": ["num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype",
                    "get_tensor_profile_shape", "create_execution_context"],
    "IExecutionContext": ["set_input_shape", "set_tensor_address", "get_tensor_shape", "execute_async_v3"],
    "IInt8Calibrator": ["get_batch", "get_batch_size", "read_calibration_cache", "write_calibration_cache",
                        "get_algorithm"],
    "ILogger": ["log"],
}


def tiny_cfg(tmp_path: Path, **over: Any):
    write_tiny_spp_model(tmp_path / "m.onnx")
    data = {"model": {"path": "m.onnx"}, "input": {"sizes": [[32, 32], [48, 40]]},
            "calibration": {"batch_size": 8}, "build": {"max_batch": 16, "workspace_mb": 256}}
    for key, value in over.items():
        data[key] = {**data.get(key, {}), **value}
    return config_from_dict(data, base=tmp_path)


# --------------------------------------------------------------------------- the bindings


def test_stubs_cover_every_symbol_the_bindings_import(trt_bindings: ModuleType) -> None:
    try:
        needed = undefined_trt_symbols()
    except StubsUnavailable as exc:
        pytest.skip(str(exc))
    assert needed and needed <= STUBBED_SYMBOLS, f"add stubs for {sorted(needed - STUBBED_SYMBOLS)}"


def test_bindings_are_tensorrt_10(trt: ModuleType) -> None:
    assert trt.__version__.startswith("10.")
    with pytest.raises(TypeError, match="nullptr"):  # what the stubs do: no Builder here
        trt.Builder(trt.Logger(trt.Logger.WARNING))


def test_every_trt_attribute_used_exists(trt: ModuleType) -> None:
    used = set()
    for source in PKG.glob("*.py"):
        used |= set(re.findall(r"\btrt\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", source.read_text()))
    assert {"BuilderFlag", "MemoryPoolType.WORKSPACE", "OnnxParser", "TensorIOMode.INPUT"} <= used
    for dotted in sorted(used):
        obj: Any = trt
        for part in dotted.split("."):
            assert hasattr(obj, part), f"trt.{dotted} does not exist in TensorRT {trt.__version__}"
            obj = getattr(obj, part)
    for cls, members in USED_MEMBERS.items():
        for member in members:
            assert hasattr(getattr(trt, cls), member), f"trt.{cls}.{member} does not exist"
    for precision in S.PRECISIONS:
        for flag in S.builder_flags(precision, True):
            assert flag in trt.BuilderFlag.__members__
    for base in S.CALIBRATOR_BASES.values():
        assert issubclass(getattr(trt, base), trt.IInt8Calibrator)
    assert RANGE_PRESERVING_LAYERS <= set(trt.LayerType.__members__)


# --------------------------------------------------------------------------- settings (pure)


def test_profile_from_sizes_and_dynamic(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path)
    p = S.profile_shapes(cfg)
    assert (p.min, p.opt, p.max) == ((1, 3, 32, 32), (16, 3, 32, 32), (16, 3, 48, 40))
    cfg = tiny_cfg(tmp_path, input={"dynamic": {"min": [16, 16], "max": [96, 96]}})
    p = S.profile_shapes(cfg, (-1, 3, -1, -1))
    assert (p.min, p.opt, p.max) == ((1, 3, 16, 16), (16, 3, 32, 32), (16, 3, 96, 96))
    assert S.profile_shapes(cfg, (4, 3, -1, -1)).max == (4, 3, 96, 96)  # a fixed batch stays fixed
    with pytest.raises(ModelError, match="fixed to 32"):
        S.profile_shapes(cfg, (-1, 3, 32, -1))
    with pytest.raises(ModelError, match="channels"):
        S.profile_shapes(cfg, (-1, 1, -1, -1))


def test_calibration_shape_is_the_first_size_at_the_calibration_batch(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path)
    assert S.calibration_shape(cfg) == (8, 3, 32, 32)
    with pytest.raises(ModelError, match="batch_size: 4"):
        S.calibration_shape(cfg, (4, 3, -1, -1))


def test_flags_workspace_names_and_timing_cache(tmp_path: Path) -> None:
    assert S.builder_flags("fp32", True) == ()
    assert S.builder_flags("fp16", False) == ("FP16",)
    assert S.builder_flags("int8", True) == ("INT8", "FP16")
    assert S.builder_flags("int8", False) == ("INT8",)
    cfg = tiny_cfg(tmp_path, build={"int8_allow_fp16": False})
    assert S.workspace_bytes(cfg) == 256 * 1024 * 1024
    plans = S.plan_builds(cfg, "int8,fp32,int8", tmp_path / "e", int8_dummy_scales=True)
    assert [p.precision for p in plans] == ["int8", "fp32"]
    assert plans[0].engine_path.name == "m_int8-dummy-scales.engine" and plans[0].dummy_scales
    assert plans[0].record_path.name == "m_int8-dummy-scales.engine.json" and plans[0].flags == ("INT8",)
    assert plans[1].engine_path.name == "m_fp32.engine" and not plans[1].dummy_scales
    assert S.timing_cache_path(cfg, tmp_path / "e") == tmp_path / "e" / "timing.cache"
    with pytest.raises(UserError, match="--precision"):
        S.parse_precisions("fp32,int4")
    assert S.calibrator_base("minmax") == ("IInt8MinMaxCalibrator", "MinMaxCalibration")
    assert S.calibrator_base("percentile") == ("IInt8EntropyCalibrator2", "EntropyCalibration2")


class Recorder:
    """A stand-in for IBuilderConfig / Builder / IOptimizationProfile that records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        if name == "create_optimization_profile":
            return lambda: self
        return lambda *args: self.calls.append((name, *args)) or True


def test_flags_and_profiles_reach_the_builder_config(tmp_path: Path, trt: ModuleType) -> None:
    cfg = tiny_cfg(tmp_path)
    plan = S.plan_builds(cfg, ["int8"], tmp_path, False)[0]
    config = Recorder()
    apply_flags(trt, config, plan.flags, plan.workspace_bytes)
    assert config.calls == [("set_flag", trt.BuilderFlag.INT8), ("set_flag", trt.BuilderFlag.FP16),
                            ("set_memory_pool_limit", trt.MemoryPoolType.WORKSPACE, 256 << 20)]
    builder, config = Recorder(), Recorder()
    builder.calls = config.calls
    add_profile(builder, config, "image", S.profile_shapes(cfg))
    shape = S.calibration_shape(cfg)
    add_profile(builder, config, "image", S.ProfileShapes(shape, shape, shape), calibration=True)
    assert config.calls[0] == ("set_shape", "image", (1, 3, 32, 32), (16, 3, 32, 32), (16, 3, 48, 40))
    assert config.calls[1][0] == "add_optimization_profile"
    assert config.calls[2] == ("set_shape", "image", (8, 3, 32, 32), (8, 3, 32, 32), (8, 3, 32, 32))
    assert config.calls[3][0] == "set_calibration_profile"


def test_dummy_ranges_cover_float_tensors_only(trt: ModuleType) -> None:
    class T:
        def __init__(self, dtype: Any) -> None:
            self.dtype, self.dynamic_range = dtype, None

    class L:
        def __init__(self, *outs: T) -> None:
            self.outs, self.num_outputs = outs, len(outs)

        def get_output(self, i: int) -> T:
            return self.outs[i]

    x, a, shape = T(trt.float32), T(trt.float16), T(trt.int64)
    net = type("N", (), {"num_inputs": 1, "get_input": lambda s, i: x, "num_layers": 2,
                         "get_layer": lambda s, i: [L(a), L(shape)][i]})()
    assert set_dummy_ranges(trt, net) == 2
    assert x.dynamic_range == a.dynamic_range == (-S.DUMMY_RANGE, S.DUMMY_RANGE) and shape.dynamic_range is None


def test_missing_ranges_come_from_producers_that_cannot_widen() -> None:
    layers = [
        LayerInfo("conv", "CONVOLUTION", ("image",), ("conv1",), (True,)),
        LayerInfo("flat", "SHUFFLE", ("conv1",), ("(Unnamed Layer* 1) [Shuffle]_output",), (True,)),
        LayerInfo("pool", "POOLING", ("(Unnamed Layer* 1) [Shuffle]_output",), ("p",), (True,)),
        LayerInfo("cat", "CONCATENATION", ("conv1", "x2"), ("cat",), (True,)),
        LayerInfo("ew", "ELEMENTWISE", ("conv1", "conv1"), ("sum",), (True,)),
        LayerInfo("shape", "SHAPE", ("conv1",), ("s",), (False,)),
        LayerInfo("w", "CONSTANT", (), ("weights",), (True,)),
    ]
    derived, missing = derive_missing(layers, {"image": 0.01, "conv1": 0.02, "x2": 0.05}, ["image"])
    assert derived == {"(Unnamed Layer* 1) [Shuffle]_output": 0.02, "p": 0.02, "cat": 0.05}
    assert missing == ["sum"]


# --------------------------------------------------------------------------- table decision


def test_table_decision(tiny_project: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = with_algorithm(load_config(tiny_project), "entropy2")
    cache = lambda algo="entropy2": TableCache(cfg, cfg.calibration.output, algo, "EntropyCalibration2", "10.16.1")  # noqa: E731
    assert table_decision(cache(), "entropy2", force=False) == "calibrate"  # no table yet: TensorRT calibrates
    for algo in ("percentile", "mse", "auto", "percentile_99_9"):  # no TensorRT calibrator: sppquant calibrates first
        assert table_decision(cache(algo), algo, force=False) == "sppquant"
    calibrate(cfg, backend="onnxruntime", progress=False)
    assert table_decision(cache(), "entropy2", force=False) == "reuse"
    write_tiny_spp_model(cfg.model.path, seed=3)
    with pytest.raises(TableError, match="stale entropy2 calibration table: model changed"):
        table_decision(cache(), "entropy2", force=False)
    with caplog.at_level(logging.WARNING):
        assert table_decision(cache(), "entropy2", force=True) == "calibrate"
    assert "--force: recalibrating the stale entropy2 table" in caplog.text and "model changed" in caplog.text


def test_stale_table_is_refused_before_any_build(tiny_project: Path, trt: ModuleType) -> None:
    cfg = load_config(tiny_project)
    calibrate(cfg, backend="onnxruntime", progress=False)
    write_tiny_spp_model(cfg.model.path, seed=5)
    with pytest.raises(TableError, match="model changed"):
        build_engines(cfg, "int8", cfg.calibration.output.parent / "engines")
    assert not (cfg.calibration.output.parent / "engines").exists() or not any(
        (cfg.calibration.output.parent / "engines").glob("*.engine"))


# --------------------------------------------------------------------------- where a GPU is needed


def test_build_without_native_tensorrt_is_one_clear_error(tiny_project: Path, trt: ModuleType) -> None:
    cfg = load_config(tiny_project)
    with pytest.raises(BackendUnavailable, match="could not create a Builder") as info:
        build_engines(cfg, "fp32", cfg.calibration.output.parent / "engines")
    assert "\n" not in str(info.value)


def test_real_engine_build_and_run(trt: ModuleType) -> None:
    pytest.skip(NEEDS_NATIVE)


def test_runner_errors(tmp_path: Path, trt: ModuleType) -> None:
    with pytest.raises(UserError, match="engine file not found"):
        TrtRunner(tmp_path / "missing.engine")
    (tmp_path / "x.engine").write_bytes(b"\0")
    with pytest.raises(BackendUnavailable):  # no pycuda in CI; on a GPU: no Runtime from the stubs
        TrtRunner(tmp_path / "x.engine")


@pytest.mark.parametrize("argv", [["build"], ["calibrate", "--backend", "tensorrt"],
                                  ["predict", "--engine", "x.engine", "img.png"]])
def test_cli_without_tensorrt_exits_2_with_one_line(tiny_project: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture, argv: list[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as without TensorRT
    (tiny_project.parent / "x.engine").write_bytes(b"\0")
    monkeypatch.chdir(tiny_project.parent)
    assert main([argv[0], "--config", str(tiny_project), *argv[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sppquant: error:")
    assert "TensorRT" in err and "pip install" in err


def test_cli_build_with_stubbed_tensorrt_exits_2(tiny_project: Path, trt: ModuleType,
                                                 capsys: pytest.CaptureFixture) -> None:
    assert main(["build", "--config", str(tiny_project), "--precision", "fp32,fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "could not create a Builder" in err


def test_cli_build_rejects_bad_precision(tiny_project: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["build", "--config", str(tiny_project), "--precision", "int4"]) == 2
    assert "--precision" in capsys.readouterr().err


def test_plugin_is_loaded_through_the_spp_loader(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    from sppquant.backends.tensorrt._trt import load_plugin
    from sppquant.ops import plugin_library as plugin

    calls = []
    fake = type("Lib", (), {"_name": "/x/libsppquant_plugins.so"})()
    monkeypatch.setattr(plugin, "load_plugin", lambda path, build=False: calls.append((path, build)) or fake)
    monkeypatch.setattr(plugin, "plugin_registered", lambda lib: False)
    with caplog.at_level(logging.WARNING):
        assert load_plugin() == Path("/x/libsppquant_plugins.so")
    assert calls == [(None, True)]  # no configured library: locate, or build it
    assert "not registered" in caplog.text
    load_plugin(Path("/y/lib.so"))
    assert calls[-1] == (Path("/y/lib.so"), False)


# --------------------------------------------------------------------------- review fixes (2026-11)


def test_report_finds_the_engine_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sppquant report --backend tensorrt` looks the runner up on the package; it must be there."""
    import sppquant.pipeline.report_variants as E

    assert E._tensorrt_runner_class() is TrtRunner
    monkeypatch.setattr(E, "resolve_backend", lambda requested: "tensorrt")
    assert E.choose_backend("tensorrt") == "tensorrt" and E.choose_backend("auto") == "tensorrt"


class _FakeTimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data or b"filled by this run"


class _FakeTimingConfig:
    """IBuilderConfig's timing-cache calls; `accept` answers set_timing_cache in turn."""

    def __init__(self, *accept: bool) -> None:
        self.accept, self.attached = list(accept), []

    def create_timing_cache(self, data: bytes) -> _FakeTimingCache:
        return _FakeTimingCache(bytes(data))

    def set_timing_cache(self, cache: _FakeTimingCache, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        self.attached.append(cache)
        return self.accept.pop(0)


def test_mismatched_timing_cache_is_replaced_not_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sppquant.backends.tensorrt.builder import TimingCache as _TimingCache

    path = tmp_path / "timing.cache"
    path.write_bytes(b"from another GPU")
    timing = _TimingCache(path)
    config = _FakeTimingConfig(False, True)  # the file's cache is refused, a fresh one is taken
    with caplog.at_level(logging.WARNING):
        timing.attach(config)
    assert [c.data for c in config.attached] == [b"from another GPU", b""]
    assert "starting a new one" in caplog.text
    later = _FakeTimingConfig(True)  # later builds of the run share the fresh cache
    timing.attach(later)
    assert later.attached == [config.attached[1]]
    timing.save()
    assert path.read_bytes() == b"filled by this run"


def test_builds_register_tensorrts_standard_plugins(tiny_project: Path, trt: ModuleType,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """RoiAlign/ScatterElements import through libnvinfer_plugin creators: init them before parsing."""
    from sppquant.backends.tensorrt import _trt
    from sppquant.pipeline import trt_build as builder

    assert _trt.init_standard_plugins(trt, _trt.trt_logger(trt)) is False  # the stubs register nothing
    calls: list[tuple] = []
    monkeypatch.setattr(_trt, "_STD_PLUGINS", set())
    monkeypatch.setattr(trt, "init_libnvinfer_plugins", lambda logger, ns: calls.append((logger, ns)) or True)
    monkeypatch.setattr(trt, "Builder", lambda logger: object())

    def stop(library: Any) -> Path:
        raise BackendUnavailable("stop here")

    monkeypatch.setattr(builder, "load_plugin", stop)
    cfg = load_config(tiny_project)
    for _ in range(2):
        with pytest.raises(BackendUnavailable, match="stop here"):
            build_engines(cfg, "fp32", cfg.calibration.output.parent / "engines")
    assert calls == [(_trt.trt_logger(trt), "")]  # once per process, before the plugin and the parser


class _FakeParser:
    def __init__(self, network: Any, logger: Any) -> None:
        self.calls: list[tuple] = []
        _FakeParser.last = self

    def parse_from_file(self, path: str) -> bool:
        self.calls.append(("parse_from_file", path))
        return True

    def parse(self, data: bytes, path: str) -> bool:
        self.calls.append(("parse", bytes(data), path))
        return True


def test_parser_gets_the_plugin_namespace_on_every_10x(tmp_path: Path, trt: ModuleType,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsers before the node-domain fallback look plugins up in ``plugin_namespace`` (default "")."""
    import onnx

    from sppquant.backends.tensorrt.builder import parse_network
    from sppquant.backends.tensorrt.builder import plugin_namespace_patch as spp_namespace_patch

    cfg = tiny_cfg(tmp_path)
    model = onnx.load(str(cfg.model.path))  # as another exporter might write it: no plugin_namespace
    for node in model.graph.node:
        kept = [a for a in node.attribute if a.name != "plugin_namespace"]
        del node.attribute[:]
        node.attribute.extend(kept)
    onnx.save(model, str(cfg.model.path))
    data = spp_namespace_patch(cfg.model.path)
    assert data is not None
    spp = [n for n in onnx.load_from_string(data).graph.node if n.op_type == "SpatialPyramidPooling"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in spp[0].attribute}
    assert attrs["plugin_namespace"] == b"sppquant" and attrs["plugin_version"] == b"1"
    assert list(attrs["levels"]) == [1, 2]
    inp = type("T", (), {"name": "image", "shape": (-1, 3, -1, -1)})()
    network = type("N", (), {"num_inputs": 1, "get_input": lambda s, i: inp})()
    fake_builder = type("B", (), {"create_network": lambda s, flags: network})()
    monkeypatch.setattr(trt, "OnnxParser", _FakeParser)
    _, parser, inputs = parse_network(trt, fake_builder, None, cfg.model.path, [cfg.model.input_name])
    got = inputs[cfg.model.input_name]
    assert got is inp and parser.calls == [("parse", data, str(cfg.model.path))]
    model = onnx.load(str(cfg.model.path))  # a model that already names the namespace is parsed as is
    model.graph.node[3].attribute.append(onnx.helper.make_attribute("plugin_namespace", "sppquant"))
    onnx.save(model, str(cfg.model.path))
    assert spp_namespace_patch(cfg.model.path) is None
    _, parser, _ = parse_network(trt, fake_builder, None, cfg.model.path, [cfg.model.input_name])
    assert parser.calls == [("parse_from_file", str(cfg.model.path))]


def test_parser_made_squeezes_get_their_producers_range() -> None:
    layers = [LayerInfo("u", "UNSQUEEZE", ("conv1", "axes"), ("(Unnamed Layer* 4) [Unsqueeze]_output",), (True,)),
              LayerInfo("s", "SQUEEZE", ("(Unnamed Layer* 4) [Unsqueeze]_output", "axes"),
                        ("(Unnamed Layer* 6) [Squeeze]_output",), (True,))]
    derived, missing = derive_missing(layers, {"conv1": 0.02})
    assert derived == {"(Unnamed Layer* 4) [Unsqueeze]_output": 0.02, "(Unnamed Layer* 6) [Squeeze]_output": 0.02}
    assert missing == []


class _RunnerFakes:
    """Engine / context / pycuda stand-ins that log the order of the calls `TrtRunner` makes."""

    def __init__(self, trt: ModuleType) -> None:
        import numpy as np

        self.np, self.trt, self.events, self.mem = np, trt, [], HostMemory()
        self.shapes: dict[str, tuple] = {}
        fakes = self

        class Ctx:
            def set_input_shape(self, name: str, shape: tuple) -> bool:
                fakes.events.append(("set_input_shape", name, shape))
                fakes.shapes[name] = shape
                return shape[0] <= 4

            def get_tensor_shape(self, name: str) -> tuple:
                fakes.events.append(("get_tensor_shape", name))
                return (fakes.shapes["image"][0], 5)

            def set_tensor_address(self, name: str, ptr: int) -> bool:
                fakes.events.append(("set_tensor_address", name))
                return True

            def execute_async_v3(self, handle: int) -> bool:
                fakes.events.append(("execute", handle))
                x = np.empty(fakes.shapes["image"], np.float32)
                fakes.mem.download(fakes.addr["image"], x)
                out = np.repeat(x.reshape(len(x), -1).sum(1, keepdims=True), 5, axis=1).astype(np.float32)
                fakes.mem.upload(fakes.addr["logits"], out)
                return True

        class Cuda:
            def memcpy_htod_async(self, ptr: int, arr: Any, stream: Any) -> None:
                fakes.events.append(("htod",))
                fakes.mem.upload(ptr, arr)

            def memcpy_dtoh_async(self, out: Any, ptr: int, stream: Any) -> None:
                fakes.events.append(("dtoh",))
                fakes.mem.download(ptr, out)

        self.ctx, self.cuda, self.addr = Ctx(), Cuda(), {}
        self.engine = type("E", (), {"get_tensor_dtype": lambda s, n: trt.float32})()
        self.stream = type("S", (), {"handle": 7, "synchronize": lambda s: fakes.events.append(("sync",))})()

    def runner(self) -> TrtRunner:
        r = TrtRunner.__new__(TrtRunner)
        r._trt, r._cuda, r._memory, r.context, r.engine, r._runtime = (self.trt, self.cuda, self.mem, self.ctx,
                                                                     self.engine, object())
        r.stream, r._buffers, r.max_batch = self.stream, {}, 4
        r.input_names, r.output_names, r.image_input = ["image"], ["logits"], "image"
        allocate = r._buffer

        def tracking(name: str, nbytes: int) -> int:
            self.addr[name] = allocate(name, nbytes)
            return self.addr[name]

        r._buffer = tracking  # type: ignore[method-assign]
        return r


def test_runner_sets_shapes_before_sizing_outputs_and_syncs_before_returning(trt: ModuleType) -> None:
    import numpy as np

    fakes = _RunnerFakes(trt)
    runner = fakes.runner()
    x = np.arange(6 * 3 * 2 * 2, dtype=np.float64).reshape(6, 3, 2, 2)  # 6 > max N 4: two chunks
    out = runner.run({"image": x})["logits"]
    assert out.shape == (6, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], x.reshape(6, -1).sum(1), rtol=1e-6)
    chunk = [e[0] for e in fakes.events[:len(fakes.events) // 2]]
    assert chunk == ["set_input_shape", "htod", "set_tensor_address", "get_tensor_shape", "set_tensor_address",
                     "execute", "dtoh", "sync"]
    assert ("set_input_shape", "image", (2, 3, 2, 2)) in fakes.events  # the last chunk's own shape
    assert fakes.mem.allocations == 2  # buffers sized by the first (larger) chunk are reused
    runner.close()
    assert fakes.mem.live == 0 and runner.context is None and runner.engine is None and fakes.events[-1] == ("sync",)
    runner.close()  # idempotent


def test_build_calibrates_an_algorithm_tensorrt_has_no_calibrator_for_with_onnxruntime_first(
        tiny_project: Path, trt: ModuleType) -> None:
    """The one table rule: no percentile table -> sppquant calibrates it (TensorRT cannot), then builds."""
    cfg = load_config(tiny_project, ["calibration.algorithm=percentile"])
    assert not cfg.calibration.output.exists()
    with pytest.raises(BackendUnavailable):  # the stubs cannot build; the table comes first
        build_engines(cfg, "int8", cfg.calibration.output.parent / "engines")
    from sppquant.pipeline.tables import check_table  # noqa: PLC0415

    assert check_table(cfg.calibration.output, cfg, "percentile").valid
