"""Batch runs: many (prompt, seed) runs on Ray, a local instance by default or a cluster.

`run_batch(specs, address, resources, progress)` schedules one Ray task per spec; each task calls
the run in-process (`task.run_one`), reusing a finished workspace and resuming an interrupted one.
scripts/batch.py and scripts/evaluate.py both go through it.
"""
from .runner import BatchInterrupted, Resources, run_batch
from .task import RunRecord, RunSettings, RunSpec, finished_summary, run_one, workspace_for

__all__ = ["BatchInterrupted", "Resources", "RunRecord", "RunSettings", "RunSpec", "finished_summary",
           "run_batch", "run_one", "workspace_for"]
