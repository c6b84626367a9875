"""The embedded demo: an SPP network trained on scikit-learn's handwritten digits.

`sppnet_digits.onnx` ships as package data; `python -m sppquant.demo.train` (needs the
``demo`` extra: torch, scikit-learn) regenerates it and the images in ``calib_data/``.
"""

from pathlib import Path

DEMO_MODEL = Path(__file__).with_name("sppnet_digits.onnx")
