"""Images -> preprocessed NCHW batches, deterministically, with decoding ahead of the consumer.

- Listing is sorted by relative POSIX path (recursive, extension filter) or comes
  from an explicit list file; an optional seeded shuffle and ``max_images`` pick the
  subset, and both the seed and the resulting order are recorded for provenance.
- Labels come from folder-per-class layouts or a CSV.
- Decoding + preprocessing run in a bounded thread pool (OpenCV releases the GIL),
  results are consumed in listing order, so batches never depend on thread timing.
- Last partial batch: ``keep`` yields it as a smaller batch (every image counts
  once); ``drop`` discards it (for consumers that need fixed-size batches).
- Bad files: ``skip`` warns, counts and lists them at the end; ``error`` stops at
  the first one with a one-line DataError.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sppquant.config import CalibrationConfig
from sppquant.errors import DataError
from sppquant.preprocess import Geometry, PreprocessConfig, load_image, preprocess_image, stack_batch

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageSet:
    """An ordered list of image files, optionally labelled, plus how it was chosen."""

    paths: tuple[Path, ...]
    root: Path | None = None
    labels: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None
    shuffled: bool = False
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def relative(self, path: Path) -> str:
        if self.root is not None:
            try:
                return path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return path.as_posix()

    def manifest_hash(self) -> str:
        """SHA-256 over (relative path, content hash) of every file, in sorted order.

        Order-free on purpose: shuffling does not change which images were used (the
        order is recorded separately); editing, adding or removing a file does.
        """
        digest = hashlib.sha256()
        for rel, path in sorted((self.relative(p), p) for p in self.paths):
            try:
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                content = "unreadable"
            # surrogateescape: a file name that is not valid UTF-8 hashes as its raw bytes
            digest.update(rel.encode("utf-8", "surrogateescape") + f"\0{content}\n".encode())
        return digest.hexdigest()


def _check_folder(root: Path, what: str) -> None:
    if not root.exists():
        raise DataError(f"{what} {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{what} {root} is not a folder")


def list_images(
    root: str | Path,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    recursive: bool = True,
    what: str = "image folder",
) -> list[Path]:
    """Image files under ``root``, sorted by relative POSIX path (case-insensitive extensions)."""
    root = Path(root)
    _check_folder(root, what)
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    pattern = "**/*" if recursive else "*"
    files = [p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in exts]
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise DataError(f"{what} {root} has no images with extensions {', '.join(sorted(exts))}")
    return files


def read_list_file(path: str | Path) -> list[Path]:
    """One image path per line (relative to the list file's folder); '#' starts a comment."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read image list: {exc.strerror or exc}") from None
    out = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            p = Path(line)
            out.append(p if p.is_absolute() else path.parent / p)
    if not out:
        raise DataError(f"{path}: image list is empty")
    return out


def select(
    paths: Sequence[Path], max_images: int | None = None, shuffle: bool = False, seed: int = 0
) -> list[Path]:
    """Seeded shuffle (if asked) then the first ``max_images``; same seed -> same choice."""
    chosen = list(paths)
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(chosen))
        chosen = [chosen[i] for i in order]
    return chosen[:max_images] if max_images is not None else chosen


def calibration_set(cal: CalibrationConfig) -> ImageSet:
    """The calibration images a config selects."""
    if cal.list_file is not None:
        paths, root = read_list_file(cal.list_file), cal.list_file.parent
    elif cal.images is not None:
        paths, root = list_images(cal.images, cal.extensions, cal.recursive, "calibration folder"), cal.images
    else:
        raise DataError("config: calibration.images: no calibration images configured (give a folder or list_file)")
    chosen = select(paths, cal.max_images, cal.shuffle, cal.seed)
    return ImageSet(tuple(chosen), root=root, shuffled=cal.shuffle, seed=cal.seed if cal.shuffle else None)


def labelled_set(
    root: str | Path,
    labels: str = "folders",
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    max_images: int | None = None,
    classes: Sequence[str] | None = None,
) -> ImageSet:
    """A labelled evaluation set: ``folders`` (one subfolder per class), ``none``, or a CSV path.

    A class folder's label is its index in ``classes`` (``report.classes``: the model's
    output order) or, when that is not given, in the sorted folder names, numbers by
    value (`sppquant.labels.folder_classes`; ``digits-eval/7`` is class 7). Folder ``180``
    is the class named "180", never output 180. ``class_names`` is the output order.
    CSV labels are integer indices, or class names when ``classes`` is given.
    """
    from sppquant.labels import class_index, folder_classes

    root = Path(root)
    paths = list_images(root, extensions, True, "evaluation folder")
    if labels == "none":
        return ImageSet(tuple(paths[:max_images] if max_images else paths), root=root)
    class_names = tuple(classes) if classes is not None else None
    if labels == "folders":
        names = sorted({p.relative_to(root).parts[0] for p in paths if len(p.relative_to(root).parts) > 1})
        if not names:
            raise DataError(f"evaluation folder {root}: labels 'folders' expects one subfolder per class, found none")
        class_names = class_names if class_names is not None else folder_classes(names)
        index = class_index(names, class_names, f"evaluation folder {root}")
        paths = [p for p in paths if len(p.relative_to(root).parts) > 1]
        labs = [index[p.relative_to(root).parts[0]] for p in paths]
    else:
        table = _read_label_csv(Path(labels), root, class_names)
        paths = [p for p in paths if p.resolve() in table]
        if not paths:
            raise DataError(f"{labels}: no image under {root} is listed in the label file")
        labs = [table[p.resolve()] for p in paths]
    if max_images is not None:
        paths, labs = paths[:max_images], labs[:max_images]
    return ImageSet(tuple(paths), root=root, labels=tuple(labs), class_names=class_names)


def _read_label_csv(path: Path, root: Path, classes: Sequence[str] | None = None) -> dict[Path, int]:
    """CSV rows ``path,label`` (header optional); paths relative to the evaluation folder.

    Without ``classes`` a label is an integer output index; with them it is a class
    name (``180`` is the class "180"), so numeric-looking names are never guessed at.
    """
    from sppquant.labels import class_index

    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except OSError as exc:
        raise DataError(f"{path}: cannot read label file: {exc.strerror or exc}") from None
    position = {c: i for i, c in enumerate(classes)} if classes is not None else None
    out: dict[Path, int] = {}
    for lineno, row in enumerate(rows, 1):
        if not row or row[0].startswith("#"):
            continue
        if len(row) != 2:
            raise DataError(f"{path}:{lineno}: expected 'path,label', got {','.join(row)!r}")
        if position is not None:
            name = row[1].strip()
            if name not in position:
                if lineno == 1:
                    continue  # header
                class_index([name], classes, f"{path}:{lineno}")  # raises, listing the classes
            label = position[name]
        else:
            try:
                label = int(row[1])
            except ValueError:
                if lineno == 1:
                    continue  # header
                raise DataError(f"{path}:{lineno}: label must be an integer, got {row[1]!r}") from None
        out[(root / row[0].strip()).resolve()] = label
    return out


# --------------------------------------------------------------------------- batches


@dataclass
class BadFiles:
    """Files rejected under the ``skip`` policy, for the end-of-run summary and reports."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: Path, reason: str) -> None:
        self.items.append((path.as_posix(), reason))

    def __len__(self) -> int:
        return len(self.items)

    def log_summary(self) -> None:
        if self.items:
            log.warning("skipped %d unreadable image(s):\n  %s", len(self.items),
                        "\n  ".join(f"{p}: {r}" for p, r in self.items))


# Other model inputs computed from a batch's images (e.g. regions of interest for a detector):
# (image batch NCHW, per-image geometry) -> {input name: array}.
FeedBuilder = Callable[[np.ndarray, Sequence[Geometry]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Batch:
    """One batch at every requested size: ``inputs[k]`` is the image tensor (NCHW) for ``sizes[k]``.

    ``geometry[k][i]`` maps image ``i``'s network coordinates at size ``k`` back to its source
    pixels; ``extra[k]`` holds the other model inputs a feed builder computed for size ``k``;
    ``labels`` are the targets (class indices) where the image set has them.
    """

    inputs: tuple[np.ndarray, ...]
    paths: tuple[Path, ...]
    labels: tuple[int, ...] | None
    indices: tuple[int, ...]  # positions in the ImageSet
    geometry: tuple[tuple[Geometry, ...], ...] = ()
    extra: tuple[Mapping[str, np.ndarray], ...] = ()

    @property
    def size(self) -> int:
        return int(self.inputs[0].shape[0])

    def feeds(self, k: int, image_input: str) -> dict[str, np.ndarray]:
        """Every model input at size ``k``: the image tensor plus the feed builder's inputs."""
        return {image_input: self.inputs[k], **(self.extra[k] if self.extra else {})}


_Loaded = tuple[tuple[np.ndarray, ...], tuple[Geometry, ...]]


def _load_one(path: Path, cfg: PreprocessConfig, sizes: Sequence[tuple[int, int]]) -> _Loaded:
    image = load_image(path)
    done = [preprocess_image(image, cfg, size) for size in sizes]
    return tuple(p.tensor for p in done), tuple(p.geometry for p in done)


def _load_chunk(
    paths: Sequence[Path], cfg: PreprocessConfig, sizes: Sequence[tuple[int, int]]
) -> list[_Loaded | DataError]:
    """Several images per task: small images take microseconds, and a task per image
    would spend more on thread hand-offs than on decoding. Errors are returned, not
    raised, so one bad file does not lose its chunk-mates."""
    out: list[_Loaded | DataError] = []
    for path in paths:
        try:
            out.append(_load_one(path, cfg, sizes))
        except DataError as exc:
            out.append(exc)
    return out


def _loaded_in_order(images: ImageSet, cfg: PreprocessConfig, sizes: Sequence[tuple[int, int]], batch_size: int,
                     bad_files: str, workers: int, bad: BadFiles, progress: bool, desc: str,
                     chunk: int) -> Iterator[tuple[int, _Loaded]]:
    """Decoded, preprocessed images in listing order; bad files skipped (or raised) by policy."""
    chunk = max(1, min(chunk, batch_size))
    window = max(1, (2 * workers * batch_size) // chunk)  # in chunks
    pending: deque[tuple[int, Future]] = deque()
    starts = iter(range(0, len(images), chunk))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sppquant-load") as pool, \
            tqdm(total=len(images), desc=desc, unit="img", disable=None if progress else True) as bar:
        try:
            while True:
                while len(pending) < window:
                    first = next(starts, None)
                    if first is None:
                        break
                    paths = images.paths[first:first + chunk]
                    pending.append((first, pool.submit(_load_chunk, paths, cfg, sizes)))
                if not pending:
                    break
                first, fut = pending.popleft()
                for i, result in enumerate(fut.result(), start=first):
                    bar.update(1)
                    if isinstance(result, DataError):
                        if bad_files == "error":
                            raise result
                        log.warning("skipping %s", result)
                        bad.add(images.paths[i], str(result))
                        continue
                    yield i, result
        finally:
            for _, fut in pending:
                fut.cancel()


def iter_batches(
    images: ImageSet,
    cfg: PreprocessConfig,
    sizes: Sequence[tuple[int, int]],
    batch_size: int,
    last_batch: str = "keep",
    bad_files: str = "skip",
    workers: int = 2,
    bad: BadFiles | None = None,
    progress: bool = True,
    desc: str = "images",
    chunk: int = 8,
    extra_feeds: FeedBuilder | None = None,
) -> Iterator[Batch]:
    """Yield batches in listing order; at most about ``2 * workers * batch_size`` images in flight.

    Images whose tensors differ in shape (policies with ``pad_to: multiple|none`` give
    each image its own size) go to separate batches: a batch holds images of one shape
    at every size, filled in listing order and emitted when full; partial batches are
    emitted at the end in order of their first image (or dropped, with ``drop``).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    bad = bad if bad is not None else BadFiles()

    def emit(items: list[tuple[int, _Loaded]]) -> Batch:
        idx = tuple(i for i, _ in items)
        inputs = tuple(stack_batch([t[0][k] for _, t in items]) for k in range(len(sizes)))
        geometry = tuple(tuple(t[1][k] for _, t in items) for k in range(len(sizes)))
        extra = tuple(dict(extra_feeds(x, g)) for x, g in zip(inputs, geometry)) if extra_feeds else ()
        labels = tuple(images.labels[i] for i in idx) if images.labels is not None else None
        return Batch(inputs, tuple(images.paths[i] for i in idx), labels, idx, geometry, extra)

    groups: dict[tuple, list[tuple[int, _Loaded]]] = {}  # tensor shapes at every size -> waiting images
    n_ok = 0
    for i, result in _loaded_in_order(images, cfg, sizes, batch_size, bad_files, workers, bad, progress, desc, chunk):
        n_ok += 1
        buf = groups.setdefault(tuple(t.shape for t in result[0]), [])
        buf.append((i, result))
        if len(buf) == batch_size:
            yield emit(buf)
            buf.clear()
    for buf in sorted((b for b in groups.values() if b), key=lambda b: b[0][0]):
        if last_batch == "keep":
            yield emit(buf)
        else:
            log.info("dropped the last partial batch of %d image(s) (last_batch: drop)", len(buf))
    if n_ok == 0:
        raise DataError(f"all {len(images)} image(s) were rejected as unreadable (first: {bad.items[0][0]}: "
                        f"{bad.items[0][1]})" if bad.items else "no images to process")
    bad.log_summary()
