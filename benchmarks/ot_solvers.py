"""Time to accuracy of the semi-discrete OT solvers, all measured the same way: l1 and max relative
cell-mass errors on an independent Monte-Carlo sample (2^24 points in the full suite; in 2-D also the exact
masses of the power cells). Gaussian source, N Gaussian targets with equal weights, d = 2 and d = 16:
``newton-qmc`` (this toolkit's solver) vs ``adam-mc`` (the reference code's algorithm, on this toolkit's
fused kernel) vs, in the full suite at d = 16, ``adam-mc-blas`` (the same, counting cells as the reference
code does: BLAS products, then argmax) vs POT's stochastic semi-dual (ASGD on a sampled source). Goal
(full suite, N = 1000): l1 <= 0.01 and max relative error <= 10% within 10 s on 2 cores, >= 10x faster
than the others to the same accuracy; where a solver never gets there, its best error and time are
reported. Writes one row per logged point (a convergence curve) and prints the time-to-accuracy summary.

    python benchmarks/ot_solvers.py --suite quick|full --out FILE.csv [--device cpu|cuda]
"""
from _ot_common import main

from dpmot_bench.bench.ot_bench import solver_benchmark, time_to_accuracy

if __name__ == "__main__":
    main(solver_benchmark, __doc__, summary=time_to_accuracy)
