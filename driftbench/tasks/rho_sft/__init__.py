"""The rho task (``task=rho_sft``): LoRA SFT plus the contrastive hinge over behavioural probe
pairs, audited by rho. ``task`` wires one run (the contract in ``driftbench.tasks.contract``);
``summary`` writes a sweep's report from run dirs alone, with ``summary_stats`` for the tests it
draws its conclusions with."""
