"""Assignment-kernel throughput: the chunked ``argmax_i <x, y_i> + h_i`` of ``dpmot_bench.ot.kernel``
against (a) a large square GEMM measured in the same run (useful FLOP/s = 2 M N d / time; goal >= 80% of
it at d >= 256) and (b) the naive one-liner ``(x @ Y.T + h).argmax(1)`` (goal: >= 4x faster at d <= 64,
where writing the M x N score matrix dominates); plus peak extra memory vs M (goal: flat in M).

    python benchmarks/ot_kernel.py --suite quick|full --out FILE.csv [--device cpu|cuda]
"""
from _ot_common import main

from dpmot_bench.bench.ot_bench import kernel_benchmark

if __name__ == "__main__":
    main(kernel_benchmark, __doc__)
