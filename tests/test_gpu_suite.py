"""`benchmarks/gpu_suite.py --dry-run`: the GPU suite's code paths on the CPU with tiny configs, so
the script does not rot between the (rare) runs on a lent GPU."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_dry_run_measures_both_sides_and_writes_the_figures(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("gpu_suite", None)
    import gpu_suite

    assert gpu_suite.main(["--dry-run", "--skip", "lora", "--results-dir", str(tmp_path)]) == 0
    figures = json.loads((tmp_path / "gpu_suite_dryrun.json").read_text(encoding="utf-8"))
    inference = figures["inference"]
    for side in ("graphgen", "pipeline"):
        assert inference[side]["seconds"] > 0 and inference[side]["its"] > 0
    # Same modules, seed and scheduler: the graph and KolorsPipeline draw the same image.
    assert inference["max_abs_pixel_diff"] <= 1e-3
    assert inference["graphgen_transfers"] == 0  # nothing moves between runs
    assert figures["budget"]["seconds"] > 0 and figures["budget"]["budget_gb"] == 10.0
    cold = figures["cold"]
    assert cold["graphgen_first_image_s"] > cold["graphgen_load_s"] > 0
    assert cold["pipeline_first_image_s"] > cold["pipeline_load_s"] > 0
    assert "lora" not in figures
    sdxl = figures["sdxl"]
    assert (sdxl["size"], sdxl["steps"], sdxl["cfg"]) == (64, 2, 7.0)
    for side in ("graphgen", "pipeline"):
        assert sdxl[side]["seconds"] > 0 and sdxl[side]["its"] > 0
    # The pipeline runs the modules CheckpointLoaderSimple made from the written file: same image.
    assert sdxl["max_abs_pixel_diff"] <= 1e-3
    assert sdxl["graphgen_transfers"] == 0
    assert sdxl["checkpoint_gb"] > 0 and sdxl["build_and_write_s"] > 0 and sdxl["load_s"] > 0
    assert set(sdxl["params_b"]) == {"unet", "clip_l", "clip_g", "vae"}
    log = (tmp_path / "gpu_suite_dryrun.log").read_text(encoding="utf-8")
    assert "[inference]" in log and "[cold start]" in log and "DRY RUN" in log
    assert "[sdxl] tiny random-weight SDXL base" in log and "StableDiffusionXLPipeline" in log


def test_sdxl_section_says_why_it_skips_without_the_sd_nodes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_suite

    from graphgen import NodeRegistry

    monkeypatch.setattr(gpu_suite, "default_registry", lambda **_: NodeRegistry())
    report = gpu_suite.Report()
    gpu_suite.section_sdxl(argparse.Namespace(size=64, steps=2, rounds=1), gpu_suite.Card(dry=True), tmp_path,
                           report)
    assert report.lines == ["[sdxl] skipped: no SDXL family in this checkout (missing nodes: "
                            "CheckpointLoaderSimple, CLIPTextEncode, KSampler)"]
    assert "skipped" in report.figures["sdxl"] and not list(tmp_path.iterdir())  # nothing written


def test_refuses_to_run_without_cuda_unless_dry(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_suite

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        gpu_suite.main([])
    assert exc.value.code == 2 and "run with --dry-run" in capsys.readouterr().err


def test_dry_run_of_the_speedups_section(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_suite

    others = [arg for section in gpu_suite.SECTIONS if section != "speedups" for arg in ("--skip", section)]
    assert gpu_suite.main(["--dry-run", "--speedups", *others, "--results-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "gpu_suite_dryrun_speedups.json").read_text(encoding="utf-8"))["speedups"]
    assert set(rows) == {"fp32 (baseline)", "bf16", "channels_last"}
    assert all(row["its"] > 0 and row["first_run_seconds"] > 0 for row in rows.values())
