"""The drift task (``task=drift_eval``): a safety classifier on frozen embeddings, scored at
each checkpoint of a drift or a real model update. ``task`` wires one run (the contract in
``driftbench.tasks.contract``); ``updates`` makes a real update's checkpoints and their twins,
``adapter`` trains the LoRA update, ``monitoring`` scores the drift monitors; ``summary`` (with
``summary_mitigations`` and ``summary_updates``) writes a sweep's report from run dirs alone."""
