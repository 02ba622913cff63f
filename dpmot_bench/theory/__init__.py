"""Numerical checks of DPM-OT's error bounds (statements and proofs in ``theory/*.md``).

* :mod:`.ot_stage`, :mod:`.lipschitz`, :mod:`.flows`, :mod:`.rates`: the lemmas' quantities.
* :func:`run_bound_checks` (tidy rows), :func:`summarise_rows`, :func:`fit_rates`, :func:`plot_bound`.
"""
from .checks import SUITES, run_bound_checks, theory_datasets
from .figures import plot_bound
from .summary import fit_rates, summarise_rows

__all__ = ["SUITES", "run_bound_checks", "theory_datasets", "plot_bound", "fit_rates", "summarise_rows"]
