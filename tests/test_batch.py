"""Batches without Ray: sweep parsing and expansion, batch files, local batches on one Engine
(models loaded once), outputs written once per job, resume, failing jobs, and the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from graphgen.batch import (
    BatchError,
    BatchSpec,
    BatchSpecError,
    batch_from_data,
    load_batch_file,
    parse_sweep,
    parse_values,
    run_batch,
    spec_from_sweeps,
)
from graphgen.batch.command import add_batch_arguments, batch_requested, run_batch_command
from graphgen.overrides import RawText

ROOT = Path(__file__).resolve().parent.parent
TXT2IMG = ROOT / "workflows" / "kolors_txt2img.json"

# ----------------------------------------------------------------------------- sweeps


def test_ranges_lists_json_and_files(tmp_path):
    assert parse_values("1..4") == [1, 2, 3, 4]
    assert parse_values("1..10:4") == [1, 5, 9]
    assert parse_values("3..1") == [3, 2, 1]
    assert parse_values("0.5..2:0.5") == [0.5, 1.0, 1.5, 2.0]
    assert parse_values("0.1..0.3:0.1") == [0.1, 0.2, 0.3]  # no float drift
    assert parse_values("a, b ,c") == ["a", "b", "c"]
    assert all(isinstance(v, RawText) for v in parse_values("1,2"))  # converted by input type later
    assert parse_values('["a cat, sitting", 3]') == ["a cat, sitting", 3]
    (tmp_path / "prompts.txt").write_text("a cat\n\n  a dog, running  \n", encoding="utf-8")
    assert parse_values("@prompts.txt", tmp_path) == ["a cat", "a dog, running"]


@pytest.mark.parametrize("expression, message", [
    ("seed", "is not KEY=VALUES"),
    ("seed=", "empty value"),
    ("seed=1,,2", "empty value"),
    ("seed=1..5:0", "never gets from"),
    ("seed=5..1:1", "never gets from"),
    ("seed=1..1000000000", "more than"),
    ("seed=@missing.txt", "cannot read"),
    ("seed=[1, 2", "not a valid JSON list"),
    ("seed=1,2; prompt=a,b,c", "as many values each"),
    ("seed=1; seed=2", "given twice"),
])
def test_bad_sweeps_say_what_is_wrong(expression, message, tmp_path):
    with pytest.raises(BatchSpecError, match=message):
        parse_sweep(expression, tmp_path)


def test_groups_multiply_and_keys_in_a_group_zip():
    spec = spec_from_sweeps(["seed=1..3", "prompt=a,b; cfg=5,7"], overrides={"steps": 2})
    jobs = spec.expand()
    assert [(j.overrides["seed"], j.overrides["prompt"], j.overrides["cfg"]) for j in jobs] == [
        (1, "a", "5"), (1, "b", "7"), (2, "a", "5"), (2, "b", "7"), (3, "a", "5"), (3, "b", "7")]
    assert all(j.overrides["steps"] == 2 for j in jobs) and [j.index for j in jobs] == list(range(6))
    assert len({j.name for j in jobs}) == 6
    assert parse_sweep("14.seed=1,2") == {"14.seed": ["1", "2"]}


def test_job_names_are_stable_and_identity_ignores_typing_and_order():
    by_text = spec_from_sweeps(["seed=5,6"]).expand()
    by_value = BatchSpec(jobs=[{"seed": 5}, {"seed": 6}]).expand()
    assert [j.name for j in by_text] == [j.name for j in by_value]
    assert by_text[0].name.startswith("seed=5-")
    a = BatchSpec(overrides={"steps": 3}, jobs=[{"seed": 1, "cfg": 5}, {"seed": 2, "cfg": 5}]).expand()
    b = BatchSpec(jobs=[{"cfg": 5, "steps": 3, "seed": 1}, {"cfg": 5, "steps": 3, "seed": 2}]).expand()
    assert [j.digest for j in a] == [j.digest for j in b]
    assert [j.name for j in b] == [j.name for j in a] and a[0].name.startswith("seed=1-")  # only what varies
    # different common overrides: different jobs
    c = BatchSpec(overrides={"steps": 4}, jobs=[{"seed": 1}]).expand()
    assert c[0].digest != a[0].digest
    # paths in names: the last part only, made safe
    d = BatchSpec(jobs=[{"kolors": "/m/a/Kolors"}, {"kolors": "../x y/Other"}]).expand()
    assert [j.name.rsplit("-", 1)[0] for j in d] == ["kolors=Kolors", "kolors=Other"]


def test_identical_jobs_are_kept_once():
    spec = spec_from_sweeps(["seed=1,2,1", "steps=3,3"])
    jobs = spec.expand()
    assert spec.count() == 6 and [j.overrides["seed"] for j in jobs] == ["1", "2"]


def test_batch_files(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\na dog\n", encoding="utf-8")
    path = tmp_path / "b.json"
    path.write_text(json.dumps({
        "name": "grid", "overrides": {"steps": 2},
        "sweep": [{"seed": "1..2"}, {"prompt": "@p.txt", "cfg": [5, 7.5]}, "width=64,128"],
        "jobs": [{"height": 64}],
    }), encoding="utf-8")
    spec = load_batch_file(path)
    jobs = spec.expand()
    assert spec.name == "grid" and len(jobs) == 8
    assert jobs[0].overrides == {"steps": 2, "height": 64, "seed": 1, "prompt": "a cat", "cfg": 5, "width": "64"}
    assert jobs[3].overrides["prompt"] == "a dog" and jobs[3].overrides["cfg"] == 7.5
    assert [j.overrides["seed"] for j in batch_from_data([{"seed": 1}, {"seed": 2}]).expand()] == [1, 2]
    for bad, message in [({"sweeps": []}, "unknown key 'sweeps'"), ({"name": "../x"}, "simple folder name"),
                         ({"sweep": [{"seed": []}]}, "empty list"), ({"jobs": [1]}, "list of objects"),
                         ({"sweep": [{"a": [1, 2], "b": [1]}]}, "as many values each"), ("x", "JSON object")]:
        with pytest.raises(BatchSpecError, match=message):
            batch_from_data(bad)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(BatchSpecError, match="not valid JSON"):
        load_batch_file(path)


# ----------------------------------------------------------------------------- local batches

SMALL = {"width": 64, "height": 64, "steps": 1, "precision": "fp32"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from graphgen import Engine

    return Engine(output_dir=tmp_path_factory.mktemp("engine-out"))


@pytest.fixture
def small(tiny_models):
    return {**SMALL, "kolors": str(tiny_models.tutorial_kolors), "vae": str(tiny_models.tutorial_fp16_vae)}


def _events(into: list):
    return lambda event: into.append(event.to_dict())


def test_local_batch_reuses_one_engine_and_writes_each_job_once(engine, small, tmp_path):
    events: list = []
    result = run_batch(TXT2IMG, spec_from_sweeps(["seed=1..3"]), engine=engine, overrides=small,
                       output_dir=tmp_path, on_event=_events(events))
    assert result.ok and [j.status for j in result.jobs] == ["success"] * 3
    # the model loads once: later jobs re-run only what the seed changes
    loads = {j.model_loads for j in result.jobs}
    assert len(loads) == 1 and engine.resources.loads == loads.pop()
    assert [("1" in j.executed) for j in result.jobs[1:]] == [False, False]
    assert all(j.executed == ["5", "6", "7"] for j in result.jobs[1:])
    folder = tmp_path / "kolors_txt2img"
    assert result.folder == folder.resolve()
    for job in result.jobs:
        job_dir = folder / job.job.name
        pngs = sorted(job_dir.rglob("*.png"))
        assert pngs == [job_dir / "kolors" / "txt2img_00001_.png"] == job.files
        manifest = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
        assert manifest["overrides"]["seed"] == job.job.overrides["seed"] and manifest["status"] == "success"
        assert manifest["ui"]["7"]["images"][0]["path"] == str(pngs[0])
        assert manifest["ui"]["7"]["images"][0]["subfolder"] == f"kolors_txt2img/{job.job.name}/kolors"
    assert not (folder / ".staging").exists()
    images = [p.read_bytes() for p in result.files()]
    assert len(set(images)) == 3  # three seeds, three images
    kinds = [e["event"] for e in events if e["event"] != "job_node_event"]
    assert kinds == ["batch_started", "worker_ready"] + ["job_started", "job_finished"] * 3 + ["batch_finished"]
    saved = [e["node_event"]["ui"]["images"][0]["path"] for e in events
             if e["event"] == "job_node_event" and e["node_event"]["event"] == "node_finished" and e["node_event"]["ui"]]
    assert saved == [str(p) for p in result.files()]  # forwarded events point at the published files
    # the images are those of single runs on the same engine
    single = engine.run(TXT2IMG, overrides={**small, "seed": 2})
    assert Path(single.ui["7"]["images"][0]["path"]).read_bytes() == images[1]


def test_resume_skips_finished_jobs_and_outputs_are_never_rewritten(engine, small, tmp_path):
    first = run_batch(TXT2IMG, spec_from_sweeps(["seed=1..2"]), engine=engine, overrides=small, output_dir=tmp_path)
    assert first.ok
    stamps = {p: p.stat().st_mtime_ns for p in first.files()}
    with pytest.raises(BatchError, match="--resume"):
        run_batch(TXT2IMG, spec_from_sweeps(["seed=1..2"]), engine=engine, overrides=small, output_dir=tmp_path)
    events: list = []
    again = run_batch(TXT2IMG, spec_from_sweeps(["seed=1..4"]), engine=engine, overrides=small, output_dir=tmp_path,
                      resume=True, on_event=_events(events))
    assert [j.status for j in again.jobs] == ["done_before", "done_before", "success", "success"]
    assert [e["job"] for e in events if e["event"] == "job_started"] == [j.job.name for j in again.jobs[2:]]
    assert again.jobs[0].files == first.jobs[0].files
    assert {p: p.stat().st_mtime_ns for p in first.files()} == stamps
    assert len(list((tmp_path / "kolors_txt2img").glob("*/kolors/*.png"))) == 4
    # another workflow file under the same batch name: refused, results are not mixed
    other = tmp_path / "kolors_txt2img.json"
    other.write_text(TXT2IMG.read_text(encoding="utf-8").replace('"default": 5.0', '"default": 6.0'), encoding="utf-8")
    with pytest.raises(BatchError, match="workflow changed"):
        run_batch(other, spec_from_sweeps(["seed=1..2"]), engine=engine, overrides=small, output_dir=tmp_path,
                  resume=True)


def test_a_failing_job_is_reported_with_its_overrides_and_the_rest_finish(engine, small, tmp_path):
    from fixtures_kolors import unreadable_kolors_folder

    broken = unreadable_kolors_folder(tmp_path / "no-such-model")  # fails when it loads, not at validation
    jobs = [{"seed": 1}, {"seed": 2, "kolors": str(broken)}, {"seed": 3}, {"seed": 4, "steps": 0}]
    events: list = []
    result = run_batch(TXT2IMG, jobs, engine=engine, overrides=small, output_dir=tmp_path, on_event=_events(events))
    assert [j.status for j in result.jobs] == ["success", "failed", "success", "invalid"]
    assert result.status == "failed" and len(result.failed) == 2
    assert "KolorsModelLoader" in result.jobs[1].error and "no-such-model" in result.jobs[1].error
    assert "steps" in result.jobs[3].error
    finished = [e for e in events if e["event"] == "batch_finished"][0]
    assert [f["overrides"]["seed"] for f in finished["failed_jobs"]] == [2, 4]
    assert finished["failed_jobs"][0]["overrides"]["kolors"].endswith("no-such-model")
    assert sorted(p.name for p in (tmp_path / "kolors_txt2img").iterdir()) == sorted(
        j.job.name for j in result.succeeded)  # failed jobs publish nothing
    # resuming runs the failed ones again (still failing), and only them
    again = run_batch(TXT2IMG, jobs, engine=engine, overrides=small, output_dir=tmp_path, resume=True)
    assert [j.status for j in again.jobs] == ["done_before", "failed", "done_before", "invalid"]


def test_stop_hands_out_no_more_jobs(engine, small, tmp_path):
    import threading

    stop = threading.Event()

    def on_event(event):
        if event.kind == "job_finished":
            stop.set()

    result = run_batch(TXT2IMG, spec_from_sweeps(["seed=1..3"]), engine=engine, overrides=small,
                       output_dir=tmp_path, on_event=on_event, stop=stop)
    assert result.status == "cancelled" and [j.status for j in result.jobs] == ["success", "not_run", "not_run"]


def test_ray_executor_without_ray_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BatchError, match=r"pip install 'graphgen\[ray\]'"):
        run_batch(TXT2IMG, [{"seed": 1}], executor="ray", output_dir=tmp_path)


# ----------------------------------------------------------------------------- command line


def run_cli(argv: list[str]) -> int:
    """`graphgen run ...` with the batch flags, whether or not cli.py wires them in already."""
    from graphgen import cli

    parser = cli.build_parser()
    run_parser = next(a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction)
                      ).choices["run"]
    if "--sweep" in run_parser._option_string_actions:
        return cli.main(argv)
    add_batch_arguments(run_parser)
    args = parser.parse_args(argv)
    assert batch_requested(args)
    return run_batch_command(args, lambda **settings: cli._engine(args, **settings))


def _cli_args(tiny_models, out: Path) -> list[str]:
    return ["run", str(TXT2IMG), "--output-dir", str(out), "--set", f"kolors={tiny_models.tutorial_kolors}",
            "--set", f"vae={tiny_models.tutorial_fp16_vae}", *[f"--set={k}={v}" for k, v in SMALL.items()]]


def test_cli_sweep_json_resume_and_view(tiny_models, tmp_path, capsys):
    base = _cli_args(tiny_models, tmp_path)
    assert run_cli([*base, "--sweep", "seed=1..2", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in lines]
    assert kinds[0] == "batch_started" and kinds[-1] == "batch_finished"
    finished = [e for e in lines if e["event"] == "job_finished"]
    assert [e["overrides"]["seed"] for e in finished] == [1, 2] and all(Path(e["files"][0]).is_file() for e in finished)
    assert lines[-1]["succeeded"] == 2 and lines[-1]["status"] == "success"

    assert run_cli([*base, "--sweep", "seed=1..2"]) == 2  # outputs exist
    assert "--resume" in capsys.readouterr().err
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"name": "b", "sweep": [{"seed": [1, 3]}]}), encoding="utf-8")
    assert run_cli([*base, "--batch", str(batch), "--resume"]) == 0  # rich view
    out = capsys.readouterr().out
    assert "batch b" in out and "2 done" in out and "models loaded" in out
    assert len(list((tmp_path / "b").glob("*/kolors/*.png"))) == 2


def test_cli_usage_errors(tiny_models, tmp_path, capsys, monkeypatch):
    base = _cli_args(tiny_models, tmp_path)
    assert run_cli([*base, "--sweep", "seed=1..x"]) == 2  # not a range: one text value, not a number
    assert "every job was invalid" in capsys.readouterr().err
    assert run_cli([*base, "--sweep", "seed"]) == 2
    assert "is not KEY=VALUES" in capsys.readouterr().err
    assert run_cli([*base, "--sweep", "seed=1", "--workers", "2"]) == 2
    assert "--workers needs --ray" in capsys.readouterr().err
    assert run_cli([*base, "--batch", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)
    assert run_cli([*base, "--sweep", "seed=1", "--ray", "auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "graphgen: error: Ray is not installed: pip install 'graphgen[ray]' (or: pip install ray)"
    assert run_cli([*base, "--sweep", "steps=0,-1", "--json"]) == 2  # every job invalid
    assert "every job was invalid" in capsys.readouterr().err


def test_large_sweeps_keep_every_job():
    """Reviewer's repro: with a 32-bit job hash, seed 52206 collided with seed 28881 and was dropped."""
    from graphgen.batch import spec_from_sweeps

    jobs = spec_from_sweeps(["seed=0..52206"]).expand()
    assert len(jobs) == 52207
    assert len({job.digest for job in jobs}) == 52207
