"""pytest fixtures: ``trt`` is TensorRT's real bindings over stub libraries, as ``import tensorrt``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.trt_stubs import StubsUnavailable, aliased, load_bindings

NEEDS_NATIVE = ("needs TensorRT native libraries (libnvinfer.so.10 & co.) and an NVIDIA GPU: a real Builder/Runtime "
                "cannot be created against the stubs")


@pytest.fixture(scope="session")
def trt_bindings(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    try:
        return load_bindings(Path(tmp_path_factory.mktemp("trt-stubs")))
    except StubsUnavailable as exc:
        pytest.skip(f"TensorRT Python bindings unavailable: {exc}")


@pytest.fixture
def trt(trt_bindings: ModuleType) -> Iterator[ModuleType]:
    """``import tensorrt`` resolves to the stubbed bindings during one test only."""
    with aliased(trt_bindings) as module:
        yield module
