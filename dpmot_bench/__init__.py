"""dpmot-bench: DPM-OT (a semi-discrete optimal-transport jump plus a few reverse diffusion steps), the
samplers it competes with, checks of its error bound, and benchmark reports.

One coordinate system throughout: ``x_sigma = x_0 + sigma * eps`` (variance exploding / EDM), with models
seen as denoisers ``D(x, sigma) ~ E[x_0 | x_sigma = x]``.
"""
__version__ = "0.1.0"
