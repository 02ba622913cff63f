"""The fused assignment kernel (``top_k.cpp``): each row's k <= 8 largest scores ``<x_i, y_j> + h_j``, on CPU.

Why it is written by hand: torch has no fused product-and-argmax on the CPU (nor has BLAS, POT or KeOps,
whose CPU reduction is slower than the chunked kernel: ``benchmarks/ot_keops.py``). The chunked kernel of
``kernel.py`` writes every score of a chunk to memory and reads it back to reduce it, which at d <= 64
costs as much as the product itself; this kernel keeps a tile of 6 points x 32 targets (AVX-512; 16 with
AVX2) in registers and, after the first 256 targets (whose scores it keeps), only looks at a tile when one
of its scores beats a row's k-th best. Measured in ``benchmarks/ot_kernel.py`` (the ``fused`` rows);
tested against the torch kernel in ``tests/test_ot_native.py``.

It is compiled on first use by the system's C++ compiler (``$CXX``, else ``g++``, ``c++`` or ``clang++``)
for the machine it runs on (``-O3 -march=native -fopenmp``) into ``$DPMOT_CACHE/native`` (the file is
named by a hash of the source, the compiler's version and the CPU's flags; written under a temporary
name and renamed, so concurrent first uses are safe). It needs an x86-64 CPU with AVX2 and FMA, and uses
16-lane vectors where the compiler targets AVX-512 (:func:`lanes`; the same scores either way). Without
a compiler, on other CPUs, or with ``DPMOT_NATIVE=0``, :func:`library` is None and the torch kernel does
the same work (:func:`status` says which, and why; the benchmarks record it).

Scores are accumulated as ``h_j``, then one fused multiply-add per coordinate in order, so a score's
float32 rounding is at most that of a d-term dot product plus one addition (what ``problem.Winners``
assumes) and does not depend on the thread count, the tile, or the other rows of the call: unlike a BLAS
product, two calls that share a row give it the same scores.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("top_k.cpp")
MAX_K = 8
MAX_DIM = 1024  # measured (2 threads): 1.2-1.8x the chunked kernel at d <= 512, on par at 1024, 0.74x at 3072
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
_reason = "not tried yet"
_enabled = True


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None when it cannot be (see :func:`status`)."""
    global _reason
    if os.environ.get("DPMOT_NATIVE", "1") == "0":
        _reason = "disabled by DPMOT_NATIVE=0"
        return None
    if platform.machine().lower() not in ("x86_64", "amd64"):
        _reason = f"not an x86-64 CPU ({platform.machine()})"
        return None
    compiler = _compiler()
    if compiler is None:
        _reason = "no C++ compiler found (set CXX)"
        return None
    from ..cache import cache_dir

    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256(SOURCE.read_bytes() + version.encode() + _cpu_flags().encode()
                             + " ".join(FLAGS).encode()).hexdigest()[:16]
        directory = cache_dir("native")
        path = directory / f"top_k-{key}.so"
        if not path.exists():
            handle, temporary = tempfile.mkstemp(suffix=".so", dir=directory)
            os.close(handle)
            try:
                built = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", temporary],
                                       capture_output=True, text=True, timeout=300)
                if built.returncode != 0:
                    last = (built.stderr.strip().splitlines() or ["failed"])[-1]
                    _reason = f"compiling {SOURCE.name} failed: {last}"
                    return None
                os.replace(temporary, path)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
        lib = load(path)
    except Exception as err:  # any failure leaves the torch kernel in charge  # noqa: BLE001
        _reason = f"not built ({type(err).__name__}: {err})"
        return None
    _reason = f"built by {(version.splitlines() or [Path(compiler).name])[0]}"
    return lib


def load(path: Path) -> ctypes.CDLL:
    """A build of ``top_k.cpp`` (:func:`library`'s, or another one: the tests compare an AVX2 build with an
    AVX-512 one), its functions declared."""
    lib = ctypes.CDLL(str(path))
    lib.dpmot_lanes.restype = ctypes.c_int
    lib.dpmot_lanes.argtypes = []
    lib.dpmot_top_k.restype = ctypes.c_int
    lib.dpmot_top_k.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return lib


@functools.cache
def lanes() -> int:
    """Targets per vector of the built kernel: 16 where it was compiled for AVX-512, else 8 (AVX2); it
    takes targets in groups of that many (:func:`pack`) and their number in multiples of twice it."""
    return library().dpmot_lanes()


def status() -> str:
    """Whether the fused kernel is in use, and why (for provenance records)."""
    return ("fused kernel: " if library() is not None else "torch kernel: ") + _reason


@contextlib.contextmanager
def disabled():
    """The torch kernel instead of this one inside the block (for comparisons: benchmarks and tests)."""
    global _enabled
    saved, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = saved


def applies(targets: torch.Tensor, k: int) -> bool:
    """Whether :func:`top_k` scores against these (padded) targets: float32 on the CPU, a multiple of
    twice :func:`lanes` rows, at most ``MAX_DIM`` coordinates, ``k <= MAX_K``, the kernel built and not
    :func:`disabled`."""
    if not (_enabled and targets.device.type == "cpu" and targets.dtype == torch.float32 and 1 <= k <= MAX_K
            and targets.shape[1] <= MAX_DIM and library() is not None):
        return False
    multiple = 2 * lanes()
    return targets.shape[0] % multiple == 0 and targets.shape[0] >= multiple


def pack(targets: torch.Tensor, lib: ctypes.CDLL | None = None) -> torch.Tensor:
    """The targets (n, d), n a multiple of :func:`lanes`, in the kernel's layout (of ``lib``, default
    :func:`library`): groups of that many, coordinate-major."""
    n, d = targets.shape
    width = (lib or library()).dpmot_lanes()
    return targets.reshape(n // width, width, d).transpose(1, 2).contiguous()


def top_k(x: torch.Tensor, packed: torch.Tensor, h: torch.Tensor, k: int,
          lib: ctypes.CDLL | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, columns)``, each (m, k): the k largest scores of every row of x (float32, on the CPU)
    against the packed targets (:func:`pack`) with weights h (float32, one per packed target), ordered by
    value and then by lowest column; missing entries are (-inf, n). Uses ``torch.get_num_threads()``
    threads; ``lib``: another build than :func:`library` (tests). Callers check :func:`applies` first."""
    lib = lib or library()
    x = x.to(torch.float32).contiguous()
    h = h.to(torch.float32).contiguous()
    m, d = x.shape
    n = h.shape[0]
    width = lib.dpmot_lanes()
    if packed.shape != (n // width, d, width):
        raise ValueError(f"packed targets of shape {tuple(packed.shape)} do not match {n} weights in {d} dimensions")
    values = torch.empty(m, k, dtype=torch.float32)
    columns = torch.empty(m, k, dtype=torch.int64)
    failed = lib.dpmot_top_k(x.data_ptr(), m, d, packed.data_ptr(), h.data_ptr(), n, k,
                                   values.data_ptr(), columns.data_ptr(), torch.get_num_threads())
    if failed:
        raise ValueError(f"the fused kernel refused m={m}, d={d}, n={n}, k={k}")
    return values, columns
