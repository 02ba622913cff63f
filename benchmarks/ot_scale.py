"""Scaling of the OT engine: seconds of one solver pass (cell counts of a fixed number of source points)
vs the number of targets N at d = 64 (goal: linear in N), and a CIFAR-scale dry run, N = 1e5 random targets
in d = 3072 (full suite; 1e4 in the quick one): seconds per source point, peak extra resident memory (goal:
within 4 GB) and the implied time of one adam-mc iteration (10 N points).

    python benchmarks/ot_scale.py --suite quick|full --out FILE.csv [--device cpu|cuda]
"""
from _ot_common import main

from dpmot_bench.bench.ot_bench import scale_benchmark

if __name__ == "__main__":
    main(scale_benchmark, __doc__)
