"""The shipped demo: model, data and config agree with each other and with the pipeline."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from sppquant.config import load_config
from sppquant.demo import DEMO_MODEL
from sppquant.ops.spp.onnx import is_spp_node, spp_node_attributes
from tests.conftest import REPO

CONFIG = REPO / "configs" / "sppnet_digits.yaml"


def test_shipped_model_is_valid_with_dynamic_input_and_one_spp_node() -> None:
    model = onnx.load(str(DEMO_MODEL))
    onnx.checker.check_model(model)
    (inp,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "image" and dims == ["N", 3, "H", "W"]
    spp = [n for n in model.graph.node if is_spp_node(n)]
    assert len(spp) == 1 and spp_node_attributes(spp[0]) == ((1, 2, 4), "max")
    assert [o.name for o in model.graph.output] == ["logits"]


def test_data_folders_come_from_the_right_splits() -> None:
    pytest.importorskip("sklearn")
    from sppquant.demo.render import digit_index, load_split

    split = load_split()
    calib = sorted((REPO / "calib_data" / "digits").glob("*.png"))
    assert 200 <= len(calib) <= 500
    assert {digit_index(p) for p in calib} <= set(split.train.tolist())
    evals = sorted((REPO / "calib_data" / "digits-eval").glob("*/*.png"))
    assert sorted({p.parent.name for p in evals}) == [str(d) for d in range(10)]
    assert sorted(digit_index(p) for p in evals) == split.test.tolist()
    assert all(int(p.parent.name) == split.labels[digit_index(p)] for p in evals)


def test_rendering_is_deterministic_and_matches_shipped_files() -> None:
    pytest.importorskip("sklearn")
    from sppquant.demo.render import STREAM_CALIB, encode_png, load_split, render_file_image
    from sppquant.preprocess import load_image

    split = load_split()
    formats = set()
    for path in sorted((REPO / "calib_data" / "digits").glob("*.png"))[::5]:
        idx = int(path.stem.split("_")[1])
        image, fmt = render_file_image(split, idx, STREAM_CALIB)
        again, _ = render_file_image(split, idx, STREAM_CALIB)
        assert np.array_equal(image, again) and encode_png(image) == encode_png(again)
        # Pixels, not PNG bytes: zlib/OpenCV versions may compress the same pixels differently.
        shipped = load_image(path)
        assert shipped.dtype == image.dtype and np.array_equal(shipped, image), path.name
        formats.add(fmt)
    assert formats == {"bgr", "gray", "bgr16", "bgra"}  # every decoder path is exercised


def test_demo_config_uses_the_training_preprocessing() -> None:
    pytest.importorskip("sklearn")
    from sppquant.demo.train import DEMO_PREPROCESS

    cfg = load_config(CONFIG)
    assert cfg.preprocess == DEMO_PREPROCESS
    assert cfg.model.path.resolve() == DEMO_MODEL.resolve() and len(cfg.input.sizes) >= 2


def test_export_matches_torch() -> None:
    """The hand-built ONNX graph (BN folded, SPP as plugin node) computes what the torch model does."""
    torch = pytest.importorskip("torch")
    from sppquant.backends.onnxruntime import OrtRunner
    from sppquant.demo.export import to_onnx
    from sppquant.demo.model import SppNet

    torch.manual_seed(0)
    model = SppNet()
    for bn in [model.block1.bn, model.block2.bn, model.block3.bn, model.spp_bn]:  # non-trivial BN statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
    model.eval()
    runner = OrtRunner(to_onnx(model))
    for shape in [(2, 3, 32, 32), (1, 3, 48, 40), (3, 3, 13, 21)]:
        x = torch.randn(shape)
        want = model(x).detach().numpy()
        got = runner.run({"image": x.numpy()}, ["logits"])["logits"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_predict_on_the_demo_reaches_97_percent() -> None:
    from sppquant.data import labelled_set
    from sppquant.pipeline.predict import predict

    cfg = load_config(CONFIG)
    images = labelled_set(REPO / "calib_data" / "digits-eval")
    results = predict(cfg, images.paths)
    accuracy = np.mean([r.label == label for r, label in zip(results, images.labels)])
    assert accuracy >= 0.97
