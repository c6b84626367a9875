from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sppquant.data import BadFiles, ImageSet, iter_batches, labelled_set, list_images, read_list_file, select
from sppquant.errors import DataError
from sppquant.preprocess import PreprocessConfig


def test_listing_is_sorted_recursive_and_filtered(image_folder: Path) -> None:
    files = list_images(image_folder)
    rel = [p.relative_to(image_folder).as_posix() for p in files]
    assert rel == sorted(rel) and len(rel) == 8 and all(r.endswith(".png") for r in rel)
    assert list_images(image_folder, recursive=False, extensions=[".png", ".txt"]) == [image_folder / "notes.txt"]


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no images"):
        list_images(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "nope")


def test_seeded_shuffle_is_deterministic(image_folder: Path) -> None:
    files = list_images(image_folder)
    a, b = select(files, 5, True, 7), select(files, 5, True, 7)
    assert a == b and len(a) == 5 and a != files[:5]
    assert select(files, 3) == files[:3]


def test_manifest_hash_ignores_order_but_sees_content(image_folder: Path) -> None:
    files = list_images(image_folder)
    h1 = ImageSet(tuple(files), root=image_folder).manifest_hash()
    assert h1 == ImageSet(tuple(reversed(files)), root=image_folder).manifest_hash()
    assert h1 != ImageSet(tuple(files[:-1]), root=image_folder).manifest_hash()
    files[0].write_bytes(files[0].read_bytes() + b"\0")
    assert h1 != ImageSet(tuple(files), root=image_folder).manifest_hash()


def test_list_file(tmp_path: Path, image_folder: Path) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text("# calibration\nimgs/a/img1.png\n\nimgs/b/img0.png  # trailing comment\n")
    assert read_list_file(lst) == [tmp_path / "imgs/a/img1.png", tmp_path / "imgs/b/img0.png"]


def test_folder_labels_and_csv_labels(image_folder: Path, tmp_path: Path) -> None:
    s = labelled_set(image_folder)
    assert s.class_names == ("a", "b")
    assert all(s.labels[i] == (0 if p.parent.name == "a" else 1) for i, p in enumerate(s.paths))
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na/img1.png,4\nb/img0.png,9\n")
    s2 = labelled_set(image_folder, labels=str(csv))
    assert [p.name for p in s2.paths] == ["img1.png", "img0.png"] and s2.labels == (4, 9)


def test_batches_last_partial_policy(image_folder: Path) -> None:
    s = ImageSet(tuple(list_images(image_folder)))
    keep = list(iter_batches(s, PreprocessConfig(), [(8, 8)], 3, last_batch="keep", progress=False))
    drop = list(iter_batches(s, PreprocessConfig(), [(8, 8)], 3, last_batch="drop", progress=False))
    assert [b.inputs[0].shape[0] for b in keep] == [3, 3, 2]
    assert [b.inputs[0].shape[0] for b in drop] == [3, 3]
    assert [i for b in keep for i in b.indices] == list(range(8))


def test_bad_file_policies(image_folder: Path) -> None:
    files = list_images(image_folder)
    (image_folder / "zero.png").write_bytes(b"")
    (image_folder / "fake.png").write_text("not a png")
    s = ImageSet(tuple(files + [image_folder / "zero.png", image_folder / "fake.png"]))
    bad = BadFiles()
    n = sum(b.inputs[0].shape[0] for b in iter_batches(s, PreprocessConfig(), [(8, 8)], 4, bad=bad, progress=False))
    assert n == 8 and len(bad) == 2 and "empty file" in bad.items[0][1]
    with pytest.raises(DataError, match="zero.png: empty file"):
        list(iter_batches(s, PreprocessConfig(), [(8, 8)], 4, bad_files="error", progress=False))
    only_bad = ImageSet((image_folder / "zero.png", image_folder / "fake.png"))
    with pytest.raises(DataError, match="all 2 image"):
        list(iter_batches(only_bad, PreprocessConfig(), [(8, 8)], 4, progress=False))


def test_results_do_not_depend_on_worker_count(image_folder: Path) -> None:
    s = ImageSet(tuple(list_images(image_folder)))
    one = np.concatenate([b.inputs[0] for b in iter_batches(s, PreprocessConfig(), [(12, 12)], 3, workers=1, progress=False)])
    four = np.concatenate([b.inputs[0] for b in iter_batches(s, PreprocessConfig(), [(12, 12)], 3, workers=4, progress=False)])
    assert one.tobytes() == four.tobytes()
