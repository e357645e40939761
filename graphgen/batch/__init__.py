"""Batches and sweeps: one workflow run once per set of overrides, locally or on Ray.

    from graphgen import Engine
    from graphgen.batch import run_batch, spec_from_sweeps

    engine = Engine(output_dir="out")
    result = run_batch("workflows/kolors_txt2img.json", spec_from_sweeps(["seed=1..16"]), engine=engine)
    # or on Ray, one actor per GPU, each with its own Engine:
    result = run_batch("workflows/kolors_txt2img.json", [{"seed": s} for s in range(16)],
                       executor="ray", address="auto", output_dir="out")

Each job's files land once in `<output_dir>/<batch name>/<job name>/` (see `graphgen.batch.store`);
`resume=True` skips jobs whose folder exists. Ray is optional (`pip install graphgen[ray]`) and
imported only by the Ray executor.
"""

from graphgen.batch.runner import BatchError, BatchResult, JobResult, WorkerStats, make_executor, run_batch
from graphgen.batch.spec import (
    BatchSpec,
    BatchSpecError,
    Job,
    batch_from_data,
    load_batch_file,
    parse_sweep,
    parse_values,
    spec_from_sweeps,
)

__all__ = [
    "BatchError", "BatchResult", "BatchSpec", "BatchSpecError", "Job", "JobResult", "WorkerStats",
    "batch_from_data", "load_batch_file", "make_executor", "parse_sweep", "parse_values", "run_batch",
    "spec_from_sweeps",
]
