"""driftbench's Slurm launcher (conf/hydra/launcher/slurm.yaml): hydra-submitit-launcher's, except
that a job that dies without a result no longer aborts the sweep.

A job that fails in Python is recorded by driftbench (its ``meta.json`` says ``failed``) and
returns normally. A job that Slurm kills (out of memory, time limit, node failure, ``scancel``)
never returns: submitit raises ``UncompletedJobError`` for it, the stock plugin lets that escape,
Hydra stops, and the sweep loses its end-of-sweep report although every other job finished.
Here such a job is logged with its Slurm state and log file and counted as a job without
metrics, like a Python failure; the sweep ends normally and ``report.md`` shows what completed.

Hydra instantiates launchers only from the ``hydra_plugins`` namespace package, so this module
is imported as ``hydra_plugins.driftbench_slurm`` (``driftbench/__init__.py`` adds this folder to
that namespace). Workers run the stock launcher's job function unchanged; the plugin registry
Hydra pickles for them names this class, and they find it because unpickling the job imports
driftbench (the task function and the sweep-report callback) first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

log = logging.getLogger("driftbench")


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        """Submit the sweep as one job array of the stock launcher's job function: the body of
        hydra-submitit-launcher 1.2.0's ``launch`` (MIT) up to where it waits for results."""
        import submitit

        assert self.config is not None and self.hydra_context is not None
        stock = submitit_launcher.SlurmLauncher(**self.params)
        stock.setup(
            hydra_context=self.hydra_context, task_function=self.task_function, config=self.config
        )
        params = self.params
        specific_init_keys = {"max_num_timeout"}
        init_params = {"folder": params["submitit_folder"]}
        init_params.update(
            {f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x in specific_init_keys}
        )
        init_keys = specific_init_keys | {"submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                x if x in baseparams else f"{self._EXECUTOR}_{x}": y
                for x, y in params.items()
                if x not in init_keys
            }
        )
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, self.config.hydra.sweep.dir)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list[Any] = []
        for k, overrides in enumerate(job_overrides):
            idx = initial_job_idx + k
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            state = Singleton.get_state()
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
        return executor.map_array(stock, *zip(*job_params, strict=True))

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from submitit.core.utils import UncompletedJobError

        results = []
        jobs = self.submit(job_overrides, initial_job_idx)
        for k, (job, overrides) in enumerate(zip(jobs, job_overrides, strict=True)):
            try:
                results.append(job.results()[0])
            except UncompletedJobError:
                log.error(
                    "job %d (%s) died without a result: Slurm job %s, state %s; its log: %s",
                    initial_job_idx + k,
                    " ".join(filter_overrides(overrides)),
                    job.job_id,
                    job.state,
                    job.paths.stderr,
                )
                # what driftbench.launcher.run returns for a failed job: no metrics
                results.append(JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED))
        return results
