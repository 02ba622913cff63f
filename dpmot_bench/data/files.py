"""A user's own data as a :class:`~dpmot_bench.data.Dataset`: arrays, ``.npy`` / ``.npz`` files, image folders.

What is accepted
- ``x``: N x d rows, N x H x W grey images or N x C x H x W images (channels first), float or integer;
  ``labels`` (N,) non-negative integers, optional (class labels for per-class metrics; absent: all 0).
- Splits: separate ``train`` and ``heldout`` arrays (an ``.npz`` with arrays ``train`` / ``heldout``, or
  ``test`` for ``heldout``, and optional ``train_labels`` / ``heldout_labels``; an image folder with
  ``train/`` and ``heldout/`` or ``test/`` subfolders), else a seeded split of ``x``: a fraction
  ``heldout_fraction`` (default 0.2) of the rows, chosen by ``numpy.random.default_rng(split_seed)``, is
  held out; each split keeps the file's row order.
- Image folders: PNG and JPEG files found recursively, sorted by relative path, read with Pillow; all of
  one size and one channel count (grey -> 1 channel, anything else -> RGB). When every image lies in a
  first-level subfolder (``cat/001.png``), the sorted subfolder names are the classes.

Values. The range of the file's values is declared (``value_range=(low, high)``) or inferred: integer data
is ``[0, 255]`` (uint8) or its observed ``[0, max]`` otherwise, float data ``[0, 1]`` or ``[-1, 1]`` when it
lies within one of them, else its observed ``[min, max]``. Rows are returned in ``scale_to`` (default: integer
images ``[-1, 1]``, the convention of the embedded digits and of diffusers; float data unchanged);
``Dataset.rescaled(low, high)`` maps them into a model's own range later. Both ranges are stated in the
dataset's description.

Memory. ``.npy`` files and arrays stored uncompressed in an ``.npz`` (``numpy.savez``) are memory-mapped,
not read: rows are converted to float32 only when asked for (``data(split, n)``). One streaming pass at
load time checks that every value is finite and within the declared range, and hashes the content
(``fingerprint``, which keys the cache of models trained on the data). Compressed ``.npz`` members and image
folders are read into memory. Nothing is unpickled (``allow_pickle=False``).
"""
from __future__ import annotations

import hashlib
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, InputError, NonFiniteError, ShapeError
from .registry import SPLITS, Dataset

DEFAULT_HELDOUT_FRACTION = 0.2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SCAN_ROWS_BYTES = 1 << 26  # rows per chunk of the load-time pass: about 64 MB


# --------------------------------------------------------------------------------------------- arrays
class _Rows:
    """Flat float32 rows ``array[indices[k]]`` of a (possibly memory-mapped) array, converted per slice."""

    def __init__(self, array, indices: np.ndarray | None):
        self.array, self.indices = array, indices
        self.dim = int(np.prod(array.shape[1:]))

    def __len__(self) -> int:
        return len(self.array) if self.indices is None else len(self.indices)

    def __getitem__(self, index):
        rows = self.array[index] if self.indices is None else self.array[self.indices[index]]
        return np.asarray(rows, dtype=np.float32).reshape(-1, self.dim)


def _sample_shape(x, name: str) -> tuple[int, ...]:
    if x.ndim == 2:
        return (x.shape[1],)
    if x.ndim == 3:
        return (1, x.shape[1], x.shape[2])
    if x.ndim == 4:
        return tuple(x.shape[1:])
    raise ShapeError(f"{name} must be N x d rows, N x H x W or N x C x H x W images, got shape {tuple(x.shape)}")


def _check_real(x, name: str) -> None:
    if not isinstance(x, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InputError(f"{name} must hold real numbers (float or integer), got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0 or int(np.prod(x.shape[1:])) == 0:
        raise ShapeError(f"{name} must hold at least one non-empty row, got shape {tuple(x.shape)}")


def _scan(x, name: str, digest) -> tuple[float, float]:
    """One pass in chunks: finite check, (min, max), and the content hash."""
    rows = max(1, _SCAN_ROWS_BYTES // max(1, x[0].nbytes))
    low, high = math.inf, -math.inf
    for start in range(0, len(x), rows):
        chunk = np.ascontiguousarray(x[start:start + rows])
        digest.update(chunk.tobytes())
        if np.issubdtype(chunk.dtype, np.floating) and not bool(np.isfinite(chunk).all()):
            bad = int(np.flatnonzero(~np.isfinite(chunk.reshape(len(chunk), -1)).all(1))[0]) + start
            raise NonFiniteError(f"{name} holds NaN or infinity (first in row {bad}); clean the data first")
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    return low, high


def _labels(labels, n: int, name: str) -> np.ndarray:
    if labels is None:
        return np.zeros(n, dtype=np.int64)
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ShapeError(f"{name} must have shape ({n},), one per row, got {tuple(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not (np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all()
                and (labels == np.round(labels)).all()):
            raise InputError(f"{name} must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if n and labels.min() < 0:
        raise InputError(f"{name} must be >= 0 (class indices), got {int(labels.min())}")
    return labels


def _infer_range(integer: bool, dtype, low: float, high: float) -> tuple[float, float]:
    if integer:
        return (0.0, 255.0) if dtype == np.uint8 else (0.0, max(high, 1.0))
    for box in ((0.0, 1.0), (-1.0, 1.0)):
        if box[0] <= low and high <= box[1]:
            return box
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def _as_range(value, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InputError(f"{name} must be finite with low < high, got ({low:g}, {high:g})")
    return low, high


def from_array(x, labels=None, *, name: str = "array", heldout=None, heldout_labels=None,
               value_range=None, scale_to=None, heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
               split_seed: int = 0, description: str | None = None, _digest=None) -> Dataset:
    """A :class:`Dataset` of your own arrays (see the module docstring for shapes, splits and ranges).

    ``x`` (and ``heldout``) are numpy arrays or memory maps; they are not copied. With ``heldout`` given,
    ``x`` is the train split; otherwise the rows are split with ``heldout_fraction`` and ``split_seed``.
    Raises :class:`~dpmot_bench.errors.InputError` (shapes, NaN, labels, ranges) before anything is built.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"name must be a non-empty string, got {name!r}")
    x = x.numpy() if hasattr(x, "numpy") and not isinstance(x, np.ndarray) else x
    _check_real(x, "x" if heldout is None else "train")
    shape = _sample_shape(x, "x")
    digest = _digest or hashlib.sha256()
    digest.update(repr((name, x.dtype.str, tuple(x.shape))).encode())
    low, high = _scan(x, "x" if heldout is None else "train", digest)
    if heldout is not None:
        heldout = heldout.numpy() if hasattr(heldout, "numpy") and not isinstance(heldout, np.ndarray) else heldout
        _check_real(heldout, "heldout")
        if _sample_shape(heldout, "heldout") != shape or heldout.dtype.kind != x.dtype.kind:
            raise ShapeError(f"train and heldout must hold samples of one shape and kind, got {shape} "
                             f"({x.dtype}) and {_sample_shape(heldout, 'heldout')} ({heldout.dtype})")
        digest.update(repr(("heldout", heldout.dtype.str, tuple(heldout.shape))).encode())
        h_low, h_high = _scan(heldout, "heldout", digest)
        low, high = min(low, h_low), max(high, h_high)
        y_train = _labels(labels, len(x), "labels" if heldout_labels is None else "train_labels")
        y_heldout = _labels(heldout_labels, len(heldout), "heldout_labels")
        if (labels is None) != (heldout_labels is None):
            raise InputError("give labels for both splits or for neither")
        splits = {"train": (_Rows(x, None), y_train), "heldout": (_Rows(heldout, None), y_heldout)}
        how = f"{len(x)} train / {len(heldout)} held-out rows as given"
    else:
        if isinstance(heldout_fraction, bool) or not isinstance(heldout_fraction, (int, float)) \
                or not 0 < heldout_fraction < 1:
            raise InputError(f"heldout_fraction must be a number in (0, 1), got {heldout_fraction!r}")
        if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
            raise InputError(f"split_seed must be an integer >= 0, got {split_seed!r}")
        n_heldout = int(round(heldout_fraction * len(x)))
        if not 1 <= n_heldout < len(x):
            raise ShapeError(f"x has {len(x)} rows: too few to hold out {heldout_fraction:g} of them and keep "
                             "a train split; give more rows or separate train / heldout arrays")
        y = _labels(labels, len(x), "labels")
        chosen = np.zeros(len(x), dtype=bool)
        chosen[np.random.default_rng(split_seed).permutation(len(x))[:n_heldout]] = True
        index = {"train": np.flatnonzero(~chosen), "heldout": np.flatnonzero(chosen)}
        digest.update(repr(("split", float(heldout_fraction), split_seed)).encode())
        splits = {s: (_Rows(x, index[s]), y[index[s]]) for s in SPLITS}
        how = (f"seeded split (seed {split_seed}): {len(index['train'])} train / {n_heldout} held-out rows")
    for labels_ in (splits["train"][1], splits["heldout"][1]):
        digest.update(labels_.tobytes())

    integer = np.issubdtype(x.dtype, np.integer)
    declared = _as_range(value_range, "value_range")
    source = declared or _infer_range(integer, x.dtype, low, high)
    if low < source[0] or high > source[1]:
        raise InputError(f"the data's values span [{low:g}, {high:g}], outside value_range [{source[0]:g}, "
                         f"{source[1]:g}]; declare the range the values really come from")
    target = _as_range(scale_to, "scale_to") or ((-1.0, 1.0) if integer and len(shape) == 3 else source)
    n_classes = int(max(splits["train"][1].max(), splits["heldout"][1].max())) + 1
    origin = "declared" if declared else "inferred"
    text = (description or f"{name}: {len(x) if heldout is None else len(x) + len(heldout)} samples of shape "
            f"{'x'.join(map(str, shape))}") + (
        f", values [{source[0]:g}, {source[1]:g}] ({x.dtype}, range {origin})"
        + ("" if target == source else f" mapped to [{target[0]:g}, {target[1]:g}]")
        + f", {n_classes} class{'es' if n_classes != 1 else ''}; {how}")
    dataset = Dataset(name, text, dim=int(np.prod(shape)), shape=shape, n_classes=n_classes,
                      splits=lambda split: splits[split], value_range=source,
                      fingerprint=digest.hexdigest()[:16])
    if target == source:
        return dataset
    from dataclasses import replace

    return replace(dataset.rescaled(*target), description=text)  # the text already states the mapping


# ---------------------------------------------------------------------------------------------- files
def _npz_member(path: Path, archive: zipfile.ZipFile, name: str):
    """Array ``name`` of an ``.npz``: memory-mapped when stored uncompressed, else read (no pickles)."""
    info = archive.getinfo(name + ".npy")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as raw:
            raw.seek(info.header_offset)
            header = raw.read(30)
            if header[:4] != b"PK\x03\x04":
                raise CorruptFileError(f"{str(path)!r} is damaged (bad zip entry for {name!r})")
            start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") \
                + int.from_bytes(header[28:30], "little")
            raw.seek(start)
            version = np.lib.format.read_magic(raw)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version in readers:
                shape, fortran, dtype = readers[version](raw)
                offset = raw.tell()
        if version not in readers:  # a newer .npy version: read it instead of mapping it
            with np.load(path, allow_pickle=False) as arrays:
                return arrays[name]
        if dtype.hasobject:
            raise CorruptFileError(f"{str(path)!r}: array {name!r} holds Python objects; store plain numbers")
        if int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    with np.load(path, allow_pickle=False) as arrays:
        return arrays[name]


def _load_npz(path: Path, options: dict) -> Dataset:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise CorruptFileError(f"{str(path)!r} is not a readable .npz file ({err})") from None
    with archive:
        names = sorted(n[:-4] for n in archive.namelist() if n.endswith(".npy"))
        try:
            def get(key):
                return _npz_member(path, archive, key) if key in names else None
            heldout_key = "heldout" if "heldout" in names else "test" if "test" in names else None
            if "train" in names and heldout_key is not None:
                return from_array(get("train"), get("train_labels"), heldout=get(heldout_key),
                                  heldout_labels=get(f"{heldout_key}_labels"), **options)
            if "x" in names:
                return from_array(get("x"), get("labels"), **options)
        except (ValueError, OSError, EOFError) as err:
            if isinstance(err, InputError):
                raise type(err)(f"{str(path)!r}: {err}") from None  # the same kind, with the file named
            raise CorruptFileError(f"{str(path)!r} is damaged ({str(err).splitlines()[0] if str(err) else err!r})") from None
    raise CorruptFileError(f"{str(path)!r} has arrays {', '.join(names) or 'none'}; expected x (and optionally "
                           "labels), or train and heldout (or test)")


def _load_npy(path: Path, options: dict) -> Dataset:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise CorruptFileError(f"{str(path)!r} is not a readable .npy array of numbers ({str(err).splitlines()[0]})") from None
    try:
        return from_array(x, **options)
    except InputError as err:
        raise type(err)(f"{str(path)!r}: {err}") from None


def _read_image(file: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.load()
            grey = image.mode in ("1", "L", "I", "I;16", "F")
            array = np.asarray(image.convert("L" if grey else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise CorruptFileError(f"{str(file)!r} is not a readable image ({err})") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _images_of(root: Path) -> tuple[np.ndarray, np.ndarray | None, list[Path]]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{str(root)!r} holds no PNG or JPEG images")
    first = _read_image(files[0])
    stack = np.empty((len(files), *first.shape), dtype=np.uint8)
    for i, file in enumerate(files):
        image = first if i == 0 else _read_image(file)
        if image.shape != first.shape:
            raise ShapeError(f"images differ in size: {str(files[0])!r} is {_describe(first)}, {str(file)!r} is "
                             f"{_describe(image)}; resize them to one size first")
        stack[i] = image
    relative = [f.relative_to(root) for f in files]
    classes = [r.parts[0] for r in relative] if all(len(r.parts) >= 2 for r in relative) else None
    return stack, classes, files


def _class_labels(*per_split: list[str] | None) -> list[np.ndarray | None]:
    """Labels from class-folder names, one numbering over every split (sorted names); none unless every
    split is sorted into class folders."""
    if any(names is None for names in per_split):
        return [None] * len(per_split)
    classes = sorted(set().union(*per_split))
    return [np.array([classes.index(n) for n in names], dtype=np.int64) for names in per_split]


def _describe(image: np.ndarray) -> str:
    return f"{image.shape[2]}x{image.shape[1]} with {image.shape[0]} channel(s)"


def _load_folder(path: Path, options: dict) -> Dataset:
    parts = {p.name: p for p in path.iterdir() if p.is_dir()}
    heldout = parts.get("heldout") or parts.get("test")
    if "train" in parts and heldout is not None:
        x, names, _ = _images_of(parts["train"])
        x_ho, names_ho, _ = _images_of(heldout)
        labels, labels_ho = _class_labels(names, names_ho)
        return from_array(x, labels, heldout=x_ho, heldout_labels=labels_ho, **options)
    x, names, _ = _images_of(path)
    return from_array(x, _class_labels(names)[0], **options)


def from_path(path: str | os.PathLike, *, name: str | None = None, value_range=None, scale_to=None,
              heldout_fraction: float = DEFAULT_HELDOUT_FRACTION, split_seed: int = 0) -> Dataset:
    """The :class:`Dataset` of a ``.npz`` / ``.npy`` file or an image folder (see the module docstring).

    ``name`` defaults to the file or folder name without suffix. Missing, unreadable or malformed files
    raise :class:`~dpmot_bench.errors.CorruptFileError`, bad contents another
    :class:`~dpmot_bench.errors.InputError`, each with the path in the message."""
    path = Path(path)
    if not path.exists():
        raise CorruptFileError(f"data {str(path)!r} does not exist; give an .npz, an .npy or an image folder")
    options = dict(name=name or path.stem or path.name, value_range=value_range, scale_to=scale_to,
                   heldout_fraction=heldout_fraction, split_seed=split_seed)
    if path.is_dir():
        return _load_folder(path, options)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, options)
    if suffix == ".npy":
        return _load_npy(path, options)
    raise CorruptFileError(f"data {str(path)!r} is neither an .npz, an .npy nor a folder of images")
