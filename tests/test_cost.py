"""Before a long run on a CPU the command line says what it will cost and how to make it small."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphgen import Engine, cli
from graphgen.cost import cpu_warning, estimate_work
from graphgen.overrides import parse_set_arguments

ROOT = Path(__file__).resolve().parent.parent
TXT2IMG = ROOT / "workflows" / "kolors_txt2img.json"
LORA = ROOT / "workflows" / "kolors_lora.json"


@pytest.fixture
def engine(tiny_models, tmp_path, monkeypatch):
    from graphgen.testing.demo_data import write_synthetic_dataset

    monkeypatch.chdir(tmp_path)
    write_synthetic_dataset(tmp_path / "data" / "lora_dataset_processed", count=2, size=64)
    return Engine(output_dir=tmp_path / "out", models_dir=tiny_models.tutorial_models)


def test_shipped_defaults_on_a_cpu_get_a_cost_and_a_quick_alternative(engine):
    prepared = engine.prepare(TXT2IMG)
    work = estimate_work(prepared)
    assert work.largest == (1024, 1024, 25) and work.megapixel_steps == pytest.approx(26.2144)
    warning = cpu_warning(prepared, accelerated=False)
    assert "1024×1024 at 25 steps" in warning and "26 megapixel-steps" in warning
    assert warning.endswith("--set width=256 --set height=256 --set steps=4")
    assert cpu_warning(prepared, accelerated=True) is None
    quick = engine.prepare(TXT2IMG, parse_set_arguments(["width=256", "height=256", "steps=4"]))
    assert cpu_warning(quick, accelerated=False) is None


def test_training_counts_its_steps_and_the_hint_names_the_workflows_parameters(engine):
    warning = cpu_warning(engine.prepare(LORA), accelerated=False)
    for argument in ("--set train_width=256", "--set train_height=256", "--set steps_per_epoch=10",
                     "--set width=256", "--set height=256", "--set steps=4"):
        assert argument in warning


def test_the_cli_prints_it_before_the_run_starts(engine, capsys, monkeypatch, tiny_models):
    ran = []
    monkeypatch.setattr(cli, "_accelerated", lambda: False)
    monkeypatch.setattr(Engine, "run", lambda self, *a, **k: ran.append(1) or (_ for _ in ()).throw(KeyboardInterrupt))
    code = cli.main(["run", str(TXT2IMG), "--models-dir", str(tiny_models.tutorial_models), "--json"])
    err = capsys.readouterr().err
    assert code == 130 and ran  # the note came first, then the run was started (and stopped here)
    assert "note:" in err and "--set width=256 --set height=256 --set steps=4" in err
    assert len([line for line in err.splitlines() if "note:" in line]) == 1
