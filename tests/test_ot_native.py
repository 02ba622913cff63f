"""The hard reductions of the kernel (``kernel.top_scores``): the fused kernel of ``native.py`` and the
torch kernel, each against exact scores (integer data: every score is exact in float32 whatever the
rounding order, so ties are real ties), and the two against each other on random data."""
import contextlib
import os
import platform
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dpmot_bench.ot import kernel, native

PATHS = ["fused", "torch"]


def _fused_or_skip():
    """Skip where the fused kernel cannot be built (another CPU, no compiler, DPMOT_NATIVE=0); fail where
    it should have been (x86-64 with AVX2 and FMA and a C++ compiler), so that a broken build cannot pass
    as a skip."""
    if native.library() is not None:
        return
    flags = native._cpu_flags().split()
    buildable = (platform.machine().lower() in ("x86_64", "amd64") and "avx2" in flags and "fma" in flags
                 and native._compiler() is not None and os.environ.get("DPMOT_NATIVE", "1") != "0")
    if buildable:
        pytest.fail(f"the fused kernel should build on this machine: {native.status()}")
    pytest.skip(native.status())


@contextlib.contextmanager
def using(path):
    """The kernel ``path`` ("fused" or "torch") for ``kernel.top_scores`` inside the block."""
    if path == "fused":
        _fused_or_skip()
    with native.disabled() if path == "torch" else contextlib.nullcontext():
        yield


def _integer_problem(seed, m, n, d, levels):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-levels, levels + 1, (m, d), generator=g).float()
    y = torch.randint(-levels, levels + 1, (n, d), generator=g).float()
    h = torch.randint(-levels, levels + 1, (n,), generator=g).float()
    return x, y, h


def _check_top(x, y, h, k, values, columns):
    n, ranks = y.shape[0], columns.shape[1]
    scores = x.double() @ y.double().T + h.double()  # exact: small integers
    found = min(k, n)
    assert values.shape == (x.shape[0], k) and ranks <= k
    expected = scores.topk(found, dim=1).values
    assert torch.equal(values[:, :found].double(), expected)
    assert bool(torch.isneginf(values[:, found:]).all()) and bool((columns[:, found:] >= n).all())
    if ranks:
        assert torch.equal(columns[:, 0], scores.argmax(dim=1))  # the lowest index among ties
        shown = min(ranks, found)
        assert torch.equal(scores.gather(1, columns[:, :shown]), expected[:, :shown])
        assert bool((columns[:, :shown].sort(dim=1).values.diff(dim=1) > 0).all())  # distinct columns


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), m=st.integers(1, 200), n=st.sampled_from([1, 2, 3, 5, 16, 17, 64, 100, 333]),
       d=st.integers(1, 40), k=st.integers(1, 8), ranks=st.integers(0, 8), levels=st.sampled_from([1, 2, 50]))
def test_top_scores_are_the_exact_top_k_with_the_lowest_index_first(path, seed, m, n, d, k, ranks, levels):
    """Padded like every caller pads (kernel.padded: -inf weights), with many exact ties at levels 1-2, and
    every number of columns asked for (each a different torch reduction)."""
    x, y, h = _integer_problem(seed, m, n, d, levels)
    with using(path):
        values, columns = kernel.top_scores(x, *kernel.padded(y, h), k, columns=min(ranks, k))
        assigned = kernel.assign(x, y, h)
    assert torch.equal(assigned, (x.double() @ y.double().T + h.double()).argmax(dim=1))
    _check_top(x, y, h, k, values, columns)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), m=st.integers(1, 300), n=st.sampled_from([64, 128, 1024]), d=st.sampled_from([2, 16, 64, 300]))
def test_the_fused_and_torch_kernels_agree_wherever_float32_can_tell(seed, m, n, d):
    """Random float data: the two round differently, so they agree on every row whose two best exact
    scores differ by more than both roundings (kernel tests' bound), and their values within it."""
    _fused_or_skip()
    g = torch.Generator().manual_seed(seed)
    x, y, h = torch.randn(m, d, generator=g), torch.randn(n, d, generator=g), torch.randn(n, generator=g)
    fused_values, fused = native.top_k(x, native.pack(y), h, 3)
    with using("torch"):
        chunked_values, chunked = kernel.top_scores(x, y, h, 3)
    scores = x.double() @ y.double().T + h.double()
    top = scores.topk(4, dim=1).values
    u = torch.finfo(torch.float32).eps / 2
    bound = ((d + 1) * u * (x.double().abs() @ y.double().abs().T) + 2 * u * scores.abs()).max(dim=1).values
    clear = (top[:, :3] - top[:, 1:]).amin(dim=1) > 2 * bound
    assert torch.equal(fused[clear], chunked[clear])
    assert bool(((fused_values.double() - top[:, :3]).abs() <= bound[:, None]).all())
    assert bool(((chunked_values.double() - top[:, :3]).abs() <= bound[:, None]).all())


def test_a_row_gets_the_same_scores_whatever_the_rows_and_threads_around_it():
    """What problem.Winners relies on when it scores a few points again: the fused kernel's float32 scores
    of a row do not depend on the call (other rows, their number, the tile) or on the thread count."""
    _fused_or_skip()
    g = torch.Generator().manual_seed(3)
    x, y, h = torch.randn(1000, 16, generator=g), torch.randn(256, 16, generator=g), torch.randn(256, generator=g)
    packed = native.pack(y)
    values, columns = native.top_k(x, packed, h, 4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for rows in (torch.randperm(1000, generator=g)[:7], torch.arange(999, 0, -3)):
            some_values, some_columns = native.top_k(x[rows], packed, h, 4)
            assert torch.equal(some_values, values[rows]) and torch.equal(some_columns, columns[rows])
    finally:
        torch.set_num_threads(threads)


def test_the_avx2_build_gives_the_avx512_builds_scores_bit_for_bit(tmp_path):
    """Where the kernel was built for AVX-512 (16 lanes), a build of the same source without it (8 lanes)
    gives the same values and columns on random float data: every score is the same chain of fused
    multiply-adds, whatever the vector width, so a CPU's choice of build changes no result."""
    _fused_or_skip()
    if native.lanes() == 8:
        pytest.skip("built for AVX2 here: there is no AVX-512 build to compare with")
    path = tmp_path / "top_k_avx2.so"
    built = subprocess.run([native._compiler(), *native.FLAGS, "-mno-avx512f", str(native.SOURCE), "-o", str(path)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    avx2 = native.load(path)
    assert avx2.dpmot_lanes() == 8
    g = torch.Generator().manual_seed(7)
    for n, d in ((64, 3), (1024, 16), (320, 100)):
        x, y, h = torch.randn(500, d, generator=g), torch.randn(n, d, generator=g), torch.randn(n, generator=g)
        y[5] = y[3]  # a tie: the lowest column first in both
        h[5] = h[3]
        for k in (1, 3, 8):
            wide = native.top_k(x, native.pack(y), h, k)
            narrow = native.top_k(x, native.pack(y, avx2), h, k, lib=avx2)
            assert torch.equal(wide[0], narrow[0]) and torch.equal(wide[1], narrow[1])


def test_without_the_fused_kernel_the_torch_kernel_does_the_work(tmp_path):
    code = ("import torch; from dpmot_bench.ot import kernel, native; "
            "x, y = torch.randn(100, 3), torch.randn(50, 3); h = torch.zeros(50); "
            "assert native.library() is None; print(native.status()); "
            "assert torch.equal(kernel.assign(x, y, h), (x.double() @ y.double().T).argmax(1))")
    env = {**os.environ, "DPMOT_NATIVE": "0", "DPMOT_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch kernel: disabled by DPMOT_NATIVE=0" in done.stdout


def test_the_kernel_refuses_mismatched_packed_targets():
    _fused_or_skip()
    y, h = torch.randn(32, 4), torch.zeros(32)
    with pytest.raises(ValueError, match="do not match"):
        native.top_k(torch.randn(5, 4), native.pack(y[:16]), h, 1)


def test_concurrent_first_uses_build_one_library_and_leave_no_temporary_file(tmp_path):
    """Two processes that find no built kernel compile it at once (each under its own temporary name, then
    an atomic rename): both use it, and the cache holds the one library and nothing half-written."""
    _fused_or_skip()
    code = ("import torch; from dpmot_bench.ot import kernel, native; print(native.status()); "
            "x, y = torch.randn(100, 5), torch.randn(64, 5); h = torch.zeros(64); "
            "assert torch.equal(kernel.assign(x, y, h), (x.double() @ y.double().T).argmax(1))")
    env = {**os.environ, "DPMOT_CACHE": str(tmp_path)}
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        assert out.startswith("fused kernel: built by"), out
    assert [path.suffix for path in (tmp_path / "native").iterdir()] == [".so"]
