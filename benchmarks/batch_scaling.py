"""Batch throughput: a tiny-model seed sweep locally and on Ray with 1 and 2 actors.

    python benchmarks/batch_scaling.py [--jobs 32] [--repeat 3] [--steps 1] [--size 64] [--json]

Every setup first runs a warm-up batch (models load, actors start: not timed), then `--repeat`
timed sweeps of `--jobs` new seeds each; the fastest is reported (this is meant for noisy shared
machines). Reported per setup:

* jobs/s of the timed sweep (wall time, including writing each job's PNG and job.json once);
* overhead per job in ms: worker time not spent running the workflow, per job
  (`(wall x workers - sum of job seconds) / jobs`): validation, staging, publishing, and for Ray
  the round trip and result transfer (queued jobs hide most of it: `prefetch`);
* model loads during the timed sweep (0: models stay loaded; each actor's Engine loaded them
  once, in the warm-up) and loader-node runs (0: the cache serves them).

The `direct` row is a plain `Engine.run` loop over the same seeds (no batch layer), the floor the
local batch is compared with. Torch runs one CPU thread everywhere (Ray gives each actor one CPU),
so local and Ray do the same arithmetic. On a machine with N CPU cores, up to N actors run in
parallel; with real GPUs, one actor per GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TXT2IMG = ROOT / "workflows" / "kolors_txt2img.json"


def _timed_batch(run_batch: Any, executor: Any, overrides: dict[str, Any], seeds: range, out: Path,
                 workers: int) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    started = time.perf_counter()
    result = run_batch(TXT2IMG, [{"seed": s} for s in seeds], executor=executor, overrides=overrides,
                       output_dir=out, on_event=lambda e: events.append(e.to_dict()))
    wall = time.perf_counter() - started
    assert result.ok, [(j.job.name, j.error) for j in result.failed]
    busy = sum(j.seconds for j in result.jobs)
    loaders = sum(1 for e in events if e["event"] == "job_node_event"
                  and e["node_event"]["event"] == "node_started" and e["node_event"]["node_id"] in ("1", "2"))
    loads = {w: s.model_loads for w, s in result.workers.items()}
    return {"jobs": len(result.jobs), "wall_s": wall, "jobs_per_s": len(result.jobs) / wall,
            "job_ms": 1000 * busy / len(result.jobs),
            "overhead_ms": 1000 * (wall * workers - busy) / len(result.jobs),
            "loader_runs": loaders, "model_loads": loads}


def _best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(rows, key=lambda r: r["jobs_per_s"])
    best["loader_runs"] = sum(r["loader_runs"] for r in rows)
    best["model_loads"] = {k: sum(r["model_loads"].get(k, 0) for r in rows) for k in rows[0]["model_loads"]}
    best["all_jobs_per_s"] = [round(r["jobs_per_s"], 2) for r in rows]
    return best


def _sweeps(jobs: int, repeat: int) -> list[range]:
    return [range(1 + r * jobs, 1 + (r + 1) * jobs) for r in range(repeat)]


def bench_direct(overrides: dict[str, Any], sweeps: list[range], out: Path) -> dict[str, Any]:
    from graphgen import Engine

    engine = Engine(output_dir=out)
    engine.run(TXT2IMG, overrides={**overrides, "seed": 10_000})
    return _best([_direct_sweep(engine, overrides, seeds) for seeds in sweeps])


def _direct_sweep(engine: Any, overrides: dict[str, Any], seeds: range) -> dict[str, Any]:
    loads = engine.resources.loads
    started = time.perf_counter()
    busy = 0.0
    for seed in seeds:
        result = engine.run(TXT2IMG, overrides={**overrides, "seed": seed})
        assert result.ok
        busy += result.seconds
    wall = time.perf_counter() - started
    return {"jobs": len(seeds), "wall_s": wall, "jobs_per_s": len(seeds) / wall, "job_ms": 1000 * busy / len(seeds),
            "overhead_ms": 1000 * (wall - busy) / len(seeds), "loader_runs": 0,
            "model_loads": {"direct": engine.resources.loads - loads}}


def bench_local(overrides: dict[str, Any], sweeps: list[range], out: Path) -> dict[str, Any]:
    from graphgen import Engine
    from graphgen.batch import run_batch
    from graphgen.batch.local import LocalExecutor

    executor = LocalExecutor(Engine(output_dir=out))
    run_batch(TXT2IMG, [{"seed": 10_000}], executor=executor, overrides=overrides, output_dir=out / "warm")
    rows = []
    for seeds in sweeps:
        before = executor.engine.resources.loads
        row = _timed_batch(run_batch, executor, overrides, seeds, out, 1)
        row["model_loads"] = {"local": executor.engine.resources.loads - before}
        rows.append(row)
    return _best(rows)


def bench_ray(overrides: dict[str, Any], sweeps: list[range], out: Path, workers: int,
              prefetch: int) -> dict[str, Any]:
    from graphgen.batch import run_batch
    from graphgen.batch.ray_executor import RayExecutor

    executor = RayExecutor(workers=workers, prefetch=prefetch)
    try:
        started = time.perf_counter()
        run_batch(TXT2IMG, [{"seed": 10_000 + i} for i in range(2 * workers)], executor=executor,
                  overrides=overrides, output_dir=out / "warm")
        startup = time.perf_counter() - started
        rows = []
        for seeds in sweeps:
            before = {i["pid"]: i["model_loads"] for i in executor.info()}
            row = _timed_batch(run_batch, executor, overrides, seeds, out, workers)
            after = {i["pid"]: i["model_loads"] for i in executor.info()}
            row["model_loads"] = {f"actor {n}": after[pid] - before.get(pid, 0) for n, pid in enumerate(sorted(after))}
            rows.append(row)
        best = _best(rows)
        best["startup_s"] = startup
        return best
    finally:
        executor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="timed sweeps per setup (the fastest is shown)")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(name, "error")

    import torch

    from graphgen.testing.tiny_kolors import write_tiny_models

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="gg-batch-bench-"))
    rows: dict[str, dict[str, Any]] = {}
    try:
        models = write_tiny_models(work / "tiny")
        overrides = {"kolors": str(models.tutorial_kolors), "vae": str(models.tutorial_fp16_vae), "width": args.size,
                     "height": args.size, "steps": args.steps, "precision": "fp32"}
        seeds = _sweeps(args.jobs, args.repeat)
        rows["direct (Engine.run loop)"] = bench_direct(overrides, seeds, work / "direct")
        rows["local batch"] = bench_local(overrides, seeds, work / "local")
        try:
            import ray
        except ImportError:
            print("Ray is not installed (pip install 'graphgen[ray]'): Ray rows skipped")
        else:
            os.environ["RAY_TMPDIR"] = str(work / "ray")
            (work / "ray").mkdir()
            ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
            try:
                rows["ray, 1 actor, no prefetch"] = bench_ray(overrides, seeds, work / "ray1p0", 1, 0)
                rows["ray, 1 actor"] = bench_ray(overrides, seeds, work / "ray1", 1, 1)
                rows["ray, 2 actors"] = bench_ray(overrides, seeds, work / "ray2", 2, 1)
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.jobs} jobs (best of {args.repeat}), tiny Kolors {args.size}x{args.size}, {args.steps} step(s), torch 1 thread, "
          f"{os.cpu_count()} CPU cores")
    print(f"{'setup':<28}{'jobs/s':>8}{'job ms':>9}{'overhead ms/job':>17}{'loads':>7}{'loader runs':>13}"
          f"{'warm-up s':>11}")
    for name, row in rows.items():
        loads = sum(row["model_loads"].values())
        warm = f"{row['startup_s']:.1f}" if "startup_s" in row else "-"
        print(f"{name:<28}{row['jobs_per_s']:>8.2f}{row['job_ms']:>9.1f}{row['overhead_ms']:>17.1f}{loads:>7}"
              f"{row['loader_runs']:>13}{warm:>11}")
    print("job ms: workflow time on the worker; overhead: worker time per job outside the workflow; "
          "loads / loader runs: during the timed sweep (0 = models stayed loaded)")


if __name__ == "__main__":
    main()
