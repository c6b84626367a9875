"""Locate / build / load error paths of sppquant.ops.plugin_library (no GPU, no compiler needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sppquant.errors import BackendUnavailable
from sppquant.ops import plugin_library as plugin


def test_env_var_names_a_missing_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(plugin.ENV_LIBRARY, str(tmp_path / "nope.so"))
    with pytest.raises(BackendUnavailable, match="SPPQUANT_PLUGIN_LIB"):
        plugin.find_plugin_library()


def test_env_var_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lib = tmp_path / "libsppquant_plugins.so"
    lib.write_bytes(b"")
    monkeypatch.setenv(plugin.ENV_LIBRARY, str(lib))
    assert plugin.find_plugin_library() == lib
    assert plugin.candidate_paths()[0] == lib


def test_not_found_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(plugin.ENV_LIBRARY, raising=False)
    monkeypatch.setattr(plugin, "candidate_paths", lambda name=plugin.PLUGIN_LIBRARY: [tmp_path / name])
    with pytest.raises(BackendUnavailable) as err:
        plugin.find_plugin_library()
    assert "\n" not in str(err.value) and "build_plugin" in str(err.value)


def test_search_order_has_build_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(plugin.ENV_LIBRARY, raising=False)
    paths = plugin.candidate_paths()
    assert paths[0] == plugin.DEFAULT_BUILD_DIR / plugin.PLUGIN_LIBRARY
    assert all(p.name == plugin.PLUGIN_LIBRARY for p in paths)


def test_load_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="does not exist"):
        plugin.load_plugin(tmp_path / "missing.so")
    bad = tmp_path / "libnot_a_library.so"
    bad.write_text("not an ELF file")
    with pytest.raises(BackendUnavailable, match="cannot load"):
        plugin.load_plugin(bad)


def test_build_without_cmake_or_nvcc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin.shutil, "which", lambda name: None)
    with pytest.raises(BackendUnavailable, match="cmake not found"):
        plugin.build_plugin()
    monkeypatch.setattr(plugin.shutil, "which", lambda name: "/usr/bin/cmake" if name == "cmake" else None)
    monkeypatch.setattr(plugin.Path, "is_file", lambda self: False)
    with pytest.raises(BackendUnavailable, match="nvcc"):
        plugin.build_plugin()


def test_missing_tensorrt_headers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="NvInferRuntime.h"):
        plugin.find_tensorrt_include(tmp_path)
    monkeypatch.setenv(plugin.ENV_TRT_INCLUDE, str(tmp_path))
    (tmp_path / "NvInferRuntime.h").write_text("")
    assert plugin.find_tensorrt_include() == tmp_path


def test_build_reports_missing_headers_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(plugin.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(plugin, "find_tensorrt_include",
                        lambda explicit=None: (_ for _ in ()).throw(BackendUnavailable("TensorRT headers (NvInferRuntime.h) not found")))
    with pytest.raises(BackendUnavailable, match="TensorRT headers"):
        plugin.build_plugin(tmp_path)


def test_detect_cuda_arch_without_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin.shutil, "which", lambda name: None)
    assert plugin.detect_cuda_arch() is None
