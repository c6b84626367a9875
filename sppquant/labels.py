"""Class names -> output indices for labelled evaluation sets, and the check that labels fit the model.

Folder ``180/`` is class "180", not output 180: a folder's index is its position in
``report.classes`` (the model's output order) or, by default, in the sorted folder
names. The report calls `check_labels` before any work, so a wrong mapping fails in
a second instead of after calibrating tables and evaluating everything.

Default order, and why numbers sort as numbers: when every folder name is a decimal
integer (``0 .. 9``, ``0 .. 999``) they sort by value. That keeps every dataset whose
folders are the class indices ``0 .. N-1`` (the demo's ``digits-eval/0..9`` included)
at exactly the indices it had before, and puts "10" after "9" as a reader expects.
torchvision's ImageFolder and Keras sort names as text ("10" before "2"); when the two
orders differ a warning says so, and ``report.classes`` settles it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sppquant.errors import DataError

if TYPE_CHECKING:
    import onnx

    from sppquant.data import ImageSet

log = logging.getLogger(__name__)


def _is_number(name: str) -> bool:
    return name.isascii() and name.isdigit()


def folder_classes(names: Iterable[str]) -> tuple[str, ...]:
    """Default class order: folder names sorted, by value when all are decimal integers (see module doc)."""
    names = sorted(set(names))
    if not names or not all(_is_number(n) for n in names):
        return tuple(names)
    by_value = sorted(names, key=lambda n: (int(n), n))
    if by_value != names:
        log.warning("class folders %s sort as numbers (%s); torchvision's ImageFolder and Keras sort them as "
                    "text (%s): set report.classes if the model was trained with the text order",
                    _span(by_value), ", ".join(by_value[:4]), ", ".join(names[:4]))
    return tuple(by_value)


def _span(names: Sequence[str]) -> str:
    return f"{names[0]}..{names[-1]}" if len(names) > 1 else names[0]


def class_index(names: Iterable[str], classes: Sequence[str], source: str) -> dict[str, int]:
    """Each of ``names`` (folder names or CSV labels) -> its index in ``classes``; DataError for a stranger."""
    position = {c: i for i, c in enumerate(classes)}
    index = {}
    for name in names:
        if name not in position:
            listed = ", ".join(repr(c) for c in list(classes)[:6]) + (", ..." if len(classes) > 6 else "")
            raise DataError(f"{source}: class {name!r} is not in report.classes ({listed})")
        index[name] = position[name]
    return index


def check_labels(images: ImageSet, output_width: int | None, source: str) -> None:
    """Refuse, with one line, labels that cannot be the model's output indices. Call before any work.

    - a class list (``report.classes``, or the folder names by default) must name every
      output: ``len(class_names) == output_width``. With folder names this also catches a
      missing class folder, which would shift every later index by one;
    - integer labels from a CSV must lie in ``0 .. output_width - 1``.

    ``output_width`` None (not known from the model: see `model_output_width`) checks nothing.
    """
    if output_width is None or images.labels is None:
        return
    if images.class_names is not None:
        n = len(images.class_names)
        if n != output_width:
            raise DataError(f"{source}: {n} classes ({_span(list(images.class_names))}) but the model has "
                            f"{output_width} outputs: set report.classes to one name per output, in output order")
        return
    if images.labels:
        lo, hi = min(images.labels), max(images.labels)
        if lo < 0 or hi >= output_width:
            raise DataError(f"{source}: labels span {lo}..{hi} but the model has {output_width} outputs "
                            f"(labels must be 0..{output_width - 1})")


def model_output_width(model: onnx.ModelProto | str | Path, output: str | None = None) -> int | None:
    """Number of values per image in an output (product of its non-batch dims), None when not static.

    The report flattens each image's output the same way, so this is its class count.
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    outputs = [o for o in model.graph.output if output is None or o.name == output]
    if not outputs:
        raise DataError(f"model has no output named {output!r}")
    dims = outputs[0].type.tensor_type.shape.dim
    width = 1
    for d in list(dims)[1:]:
        if not d.HasField("dim_value") or d.dim_value <= 0:
            return None
        width *= d.dim_value
    return width if len(dims) >= 1 else None
