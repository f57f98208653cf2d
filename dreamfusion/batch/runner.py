"""Many runs on Ray: one task per (prompt, seed), each calling the run in-process (task.run_one).

Scheduling is Ray's: each task asks for `cpus_per_run` cores and, on a cluster with GPUs,
`gpus_per_run` GPUs, so a local machine runs cores/cpus_per_run at a time and a cluster one per GPU.
A task whose worker dies (killed, out of memory, node lost) is retried by Ray, and the retry resumes
from the workspace's last checkpoint. Ctrl-C cancels what is left: running tasks get Ray's
KeyboardInterrupt, which the run turns into a saved checkpoint, so every workspace can be resumed.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from ..config import ConfigError
from .cluster import ray_session
from .task import RunRecord, RunSpec, run_one

Progress = Callable[[RunRecord], None]  # called once per finished run


@dataclass
class Resources:
    cpus_per_run: int | None = None  # default: a local instance's cores / jobs; 1 a run on a GPU cluster
    gpus_per_run: float | None = None  # default: 1 when the cluster has GPUs, else 0
    jobs: int = 1  # runs side by side on a local instance (sets cpus_per_run when that is not given)
    retries: int = 2  # times Ray reruns a task whose worker was lost


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C: the records of the runs that ended (finished, failed or stopped at a checkpoint). A
    KeyboardInterrupt, so a caller that does not report them (evaluate.py) exits as interrupted."""

    def __init__(self, records: list[RunRecord], left: int):
        super().__init__(f"interrupted with {left} runs unfinished")
        self.records, self.left = records, left


def plan_resources(res: Resources, cluster: dict, local: bool, cpu_only: bool = False) -> tuple[int, float]:
    """(cpus, gpus) each task asks for, checked against what the cluster has. Runs pinned to the
    CPU (--device cpu) ask for no GPU unless told to."""
    cpus_total, gpus_total = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    gpus = res.gpus_per_run if res.gpus_per_run is not None else (1.0 if gpus_total > 0 and not cpu_only else 0.0)
    if gpus > gpus_total:
        raise ConfigError(f"--gpus-per-run {gpus:g}: the Ray cluster has {gpus_total:g} GPUs; use --gpus-per-run 0 for CPU runs")
    if res.cpus_per_run is not None:
        cpus = res.cpus_per_run
    elif local:
        cpus = max(1, int(cpus_total) // max(1, res.jobs))
    else:
        cpus = 1 if gpus > 0 else min(2, max(1, int(cpus_total)))
    if cpus > cpus_total:
        raise ConfigError(f"--cpus-per-run {cpus}: the Ray cluster has {cpus_total:g} CPUs in all; ask for fewer")
    return cpus, gpus


def _failed(spec: RunSpec, err: BaseException) -> RunRecord:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return RunRecord(spec.prompt, spec.seed, spec.workspace, "failed", None,
                     f"its Ray task failed after the retries ({type(err).__name__}: {first[:200]})")


def run_batch(specs: Sequence[RunSpec], address: str | None = None, resources: Resources | None = None,
              progress: Progress | None = None) -> list[RunRecord]:
    """Every spec's RunRecord, in the order of `specs`. Raises ConfigError for a cluster that
    cannot be reached or cannot hold a run, BatchInterrupted on Ctrl-C."""
    res = resources or Resources()
    with ray_session(address) as cluster:
        import ray

        cpu_only = all(s.settings.device == "cpu" for s in specs)
        cpus, gpus = plan_resources(res, cluster, local=address is None, cpu_only=cpu_only)
        remote = ray.remote(run_one).options(num_cpus=cpus, num_gpus=gpus, max_retries=res.retries, retry_exceptions=False)
        refs = [remote.remote(dataclasses.replace(s, threads=s.threads or cpus)) for s in specs]
        index = {ref: i for i, ref in enumerate(refs)}
        records: list[RunRecord | None] = [None] * len(specs)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = index[ref]
                    try:
                        records[i] = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        records[i] = _failed(specs[i], err)
                    if progress is not None:
                        progress(records[i])
        except KeyboardInterrupt:
            raise BatchInterrupted(_cancel(ray, pending, index, specs, records), len(pending)) from None
        return [r for r in records if r is not None]


def _cancel(ray, pending: list, index: dict, specs: Sequence[RunSpec], records: list) -> list[RunRecord]:
    """Cancel the unfinished tasks and collect what they return: a running run stops at a saved
    checkpoint (Ray raises KeyboardInterrupt in it); a queued one never starts."""
    for ref in pending:
        ray.cancel(ref, force=False)
    deadline = time.time() + float(os.environ.get("DREAMFUSION_CANCEL_WAIT", "60"))
    for ref in pending:
        i = index[ref]
        try:
            records[i] = ray.get(ref, timeout=max(0.1, deadline - time.time()))
        except (ray.exceptions.RayError, KeyboardInterrupt):
            s = specs[i]
            records[i] = RunRecord(s.prompt, s.seed, s.workspace, "interrupted", None,
                                   "cancelled; the same command resumes it from its last checkpoint")
    return [r for r in records if r is not None]
