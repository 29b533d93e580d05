"""driftbench's sweeper (conf/hydra/sweeper/driftbench.yaml): Hydra's basic sweeper, without its
own second composition of every job before the launch.

The basic sweeper composes each job's config once to check that it composes, and the launcher
composes it again to run it. In driftbench that check is already made, with more:
``driftbench.launcher.SweepPlan`` (a Hydra callback, run before the sweeper starts) composes
every job, checks its values and counts the complete ones, and a job that does not compose stops
the sweep there; the launcher is then handed the config the plan composed
(``driftbench.launcher.composed_once``), so each job is composed once in all. Composing a config
takes about 0.15-0.2 s on a 2-core machine: each composition saved is ~12-15 s of a 78-job
sweep. Hydra takes sweepers only from the ``hydra_plugins``
namespace package, so this module is imported as ``hydra_plugins.driftbench_sweeper`` (see
``driftbench/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class PlannedSweeper(BasicSweeper):
    """The basic sweeper: the same jobs in the same order, batches and ``params``."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing left to check: SweepPlan composed every job of the sweep before it began."""
