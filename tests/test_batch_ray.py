"""Batches on a real local Ray cluster with two logical GPUs (no GPU needed).

One session cluster: `ray.init(num_cpus=2, num_gpus=2, include_dashboard=False)`, its files in a
temporary folder (RAY_TMPDIR). Each actor sees its own `CUDA_VISIBLE_DEVICES` ("0", "1"). Workers
import graphgen from the installed (editable) package. Skipped when Ray is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'graphgen[ray]'); Ray batches untested")

from graphgen.batch import run_batch, spec_from_sweeps  # noqa: E402
from graphgen.batch.ray_executor import RayExecutor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TXT2IMG = ROOT / "workflows" / "kolors_txt2img.json"
SMALL = {"width": 64, "height": 64, "steps": 1, "precision": "fp32"}
SEEDS = 16


@pytest.fixture(scope="session")
def ray_cluster():
    folder = tempfile.mkdtemp(prefix="gg-ray-")  # short: Ray puts unix sockets in it
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = folder
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def small(tiny_models):
    return {**SMALL, "kolors": str(tiny_models.tutorial_kolors), "vae": str(tiny_models.tutorial_fp16_vae)}


def images(folder: Path) -> dict[str, bytes]:
    """PNG bytes by job folder name; each job folder must hold exactly one."""
    found: dict[str, bytes] = {}
    for job_dir in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        pngs = list(job_dir.rglob("*.png"))
        assert len(pngs) == 1, f"{job_dir.name}: {pngs}"
        found[job_dir.name] = pngs[0].read_bytes()
    return found


@pytest.fixture(scope="module")
def local_reference(small, tmp_path_factory):
    """The 16-seed sweep run locally, with one CPU thread as each Ray actor has (CPU float sums
    depend on the thread count; with the same count the PNGs are identical byte for byte)."""
    import torch

    from graphgen import Engine

    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_batch(TXT2IMG, spec_from_sweeps([f"seed=1..{SEEDS}"]), engine=Engine(output_dir=out),
                           overrides=small)
    finally:
        torch.set_num_threads(threads)
    assert result.ok
    return images(out / "kolors_txt2img")


def test_sweep_on_two_gpus_matches_local_and_loads_models_once_per_actor(ray_cluster, small, local_reference,
                                                                          tmp_path, capsys):
    from graphgen import cli
    from graphgen.batch.command import add_batch_arguments, batch_requested, run_batch_command

    argv = ["run", str(TXT2IMG), "--output-dir", str(tmp_path), "--sweep", f"seed=1..{SEEDS}", "--ray", "auto",
            "--json", *[f"--set={k}={v}" for k, v in small.items()]]
    parser = cli.build_parser()
    run_parser = next(a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction)
                      ).choices["run"]
    if "--sweep" in run_parser._option_string_actions:  # wired into cli.py
        code = cli.main(argv)
    else:
        add_batch_arguments(run_parser)
        args = parser.parse_args(argv)
        assert batch_requested(args)
        code = run_batch_command(args, lambda **settings: cli._engine(args, **settings))
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0, events[-1]

    # same images as the local sweep, one per job, nothing missing or extra
    assert images(tmp_path / "kolors_txt2img") == local_reference
    assert not (tmp_path / "kolors_txt2img" / ".staging").exists()

    # one actor per logical GPU, in separate processes
    ready = [e for e in events if e["event"] == "worker_ready"]
    assert sorted(e["worker"] for e in ready) == ["ray-0", "ray-1"]
    assert sorted(g for e in ready for g in e["gpus"]) == ["0", "1"]
    assert len({e["pid"] for e in ready}) == 2 and os.getpid() not in {e["pid"] for e in ready}

    # both worked, and each loaded the model once: its loader ran in its first job only
    finished = [e for e in events if e["event"] == "job_finished"]
    assert len(finished) == SEEDS and all(e["status"] == "success" for e in finished)
    per_worker = Counter(e["worker"] for e in finished)
    assert set(per_worker) == {"ray-0", "ray-1"}
    loader_runs = Counter(e["worker"] for e in events if e["event"] == "job_node_event"
                          and e["node_event"]["event"] == "node_started" and e["node_event"]["node_id"] == "1")
    assert loader_runs == {"ray-0": 1, "ray-1": 1}
    for worker in per_worker:
        loads = {e["model_loads"] for e in finished if e["worker"] == worker}
        assert len(loads) == 1 and loads.pop() > 0  # flat from the first job on
    assert not [e for e in events if e["event"] == "worker_restarted"]
    assert events[-1]["event"] == "batch_finished" and events[-1]["succeeded"] == SEEDS


@pytest.fixture(scope="module")
def executor(ray_cluster):
    """Two actors kept across tests (their models stay loaded); stopped at the end of the module."""
    runner = RayExecutor(workers=2)
    yield runner
    runner.close()


def test_a_killed_actor_is_restarted_and_loses_no_job(executor, small, local_reference, tmp_path):
    seeds = 8
    pids: dict[str, int] = {}
    killed: list[int] = []
    events: list[dict] = []

    def on_event(event):
        data = event.to_dict()
        events.append(data)
        if data["event"] == "worker_ready":
            pids[data["worker"]] = data["pid"]
        # SIGKILL ray-0 (as the OOM killer would) when its first job is back: the next one is on it already
        if data["event"] == "job_finished" and data["worker"] == "ray-0" and not killed:
            killed.append(pids["ray-0"])
            os.kill(pids["ray-0"], signal.SIGKILL)

    result = run_batch(TXT2IMG, spec_from_sweeps([f"seed=1..{seeds}"]), executor=executor, overrides=small,
                       output_dir=tmp_path, on_event=on_event)
    assert killed and result.ok, [(j.job.name, j.status, j.error) for j in result.jobs]
    assert [j.status for j in result.jobs] == ["success"] * seeds
    restarted = [e for e in events if e["event"] == "worker_restarted"]
    assert [(e["worker"], e["previous_pid"]) for e in restarted] == [("ray-0", killed[0])]
    assert result.workers["ray-0"].restarts == 1
    # every job written once, the same images as the local sweep
    got = images(tmp_path / "kolors_txt2img")
    assert len(got) == seeds and got == {name: local_reference[name] for name in got}
    assert [e["job"] for e in events if e["event"] == "job_finished"].count(result.jobs[0].job.name) == 1
    assert len([e for e in events if e["event"] == "job_finished"]) == seeds


def test_a_failing_job_is_reported_and_the_rest_finish(executor, small, tmp_path):
    from fixtures_kolors import unreadable_kolors_folder

    broken = unreadable_kolors_folder(tmp_path / "no-such-model")  # fails when it loads, not at validation
    jobs = [{"seed": 1}, {"seed": 2, "kolors": str(broken)}, {"seed": 3}, {"seed": 4}]
    events: list[dict] = []
    result = run_batch(TXT2IMG, jobs, executor=executor, overrides=small, output_dir=tmp_path,
                       on_event=lambda e: events.append(e.to_dict()))
    assert [j.status for j in result.jobs] == ["success", "failed", "success", "success"]
    assert "KolorsModelLoader" in result.jobs[1].error and "no-such-model" in result.jobs[1].error
    failed = events[-1]["failed_jobs"]
    assert events[-1]["event"] == "batch_finished" and [f["overrides"]["seed"] for f in failed] == [2]
    assert failed[0]["overrides"]["kolors"].endswith("no-such-model")
    assert len(images(tmp_path / "kolors_txt2img")) == 3
    # the actors keep their models: a loader runs at most once per actor (none when warm from other tests)
    loader_runs = Counter(e["worker"] for e in events if e["event"] == "job_node_event"
                          and e["node_event"]["event"] == "node_finished" and e["node_event"]["node_id"] == "1")
    assert all(count <= 1 for count in loader_runs.values())
