"""Where a training run writes: a free output name, the checkpoint to resume, a finished LoRA to reuse.

A run never replaces another run's LoRA or checkpoint: it takes ``output_name``, else
``output_name_00002``, ... (:func:`choose_output`). Leftovers of an unfinished run under the
configured name move to ``.abandoned/`` (nothing is deleted).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .checkpoint import load_checkpoint
from .train_config import Fingerprints, TrainConfig, TrainError, find_existing, run_key

__all__ = ["choose_output"]


def _checkpoint_key(path: Path) -> str | None:
    try:
        ckpt = load_checkpoint(path)
    except ValueError:
        return "<unreadable>"
    return None if ckpt is None else str(ckpt.get("run_key"))


def _move_aside(paths: dict[str, Path], why: str, warnings: list[str]) -> None:
    """Moves an unfinished run's leftovers (no LoRA) into ``.abandoned/`` so the name is free again.

    Nothing is deleted: the files keep their names under ``<output>/.abandoned/<time>/``.
    """
    leftovers = [paths[k] for k in ("checkpoint", "csv", "png") if paths[k].exists()]
    if not leftovers:
        return
    folder = paths["lora"].parent / ".abandoned" / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    for path in leftovers:
        path.replace(folder / path.name)
    warnings.append(f"moved {why} ({', '.join(p.name for p in leftovers)}) to {folder}")


def choose_output(
    config: TrainConfig, fps: Fingerprints, warnings: list[str] | None = None
) -> tuple[TrainConfig, Path | None, Path | None]:
    """Where this run writes, never replacing another run's LoRA or checkpoint.

    Tries `output_name`, then `output_name_00002`, ... and takes the first name whose files are
    either absent or this run's own: a finished LoRA with this run's key is reused (when
    `reuse_existing`), a checkpoint with this run's key is resumed. A finished LoRA of a
    different run (other data or parameters) keeps its name and files. A checkpoint that extends
    a kept, shorter run of the same settings is resumed even though the new LoRA gets a new name.

    Leftovers of an unfinished run under the configured name (a loss CSV of a run killed before
    its first checkpoint, the checkpoint of a cancelled run with other settings) do not push the
    name on: they are moved to ``.abandoned/`` (with a warning) and this run takes the name.

    Returns:
        `(config with the chosen output_name, LoRA to reuse or None, checkpoint to resume or None)`.

    Raises:
        TrainError: A checkpoint under the configured name cannot be read and ``resume`` is on.
    """
    warnings = warnings if warnings is not None else []
    ckpt_key = run_key(config, fps, with_length=False)
    resumable: Path | None = None
    for index in range(1, 10_000):
        name = config.output_name if index == 1 else f"{config.output_name}_{index:05d}"
        candidate = dataclasses.replace(config, output_name=name)
        paths = candidate.paths()
        if config.reuse_existing and (hit := find_existing(candidate, fps)) is not None:
            return candidate, hit, None
        ckpt_owner = _checkpoint_key(paths["checkpoint"]) if paths["checkpoint"].exists() else None
        if ckpt_owner == "<unreadable>" and not paths["lora"].exists():
            if config.resume:
                raise TrainError(
                    f"checkpoint {paths['checkpoint']} cannot be read (damaged or not a graphgen checkpoint): "
                    "restore it to resume, or set resume=False to start over (it is then kept in .abandoned/)"
                )
            _move_aside(paths, "an unreadable checkpoint", warnings)
            ckpt_owner = None
        if ckpt_owner == ckpt_key:
            if not paths["lora"].exists():
                return candidate, None, paths["checkpoint"]  # this run, interrupted: resume in place
            if resumable is None:
                resumable = paths["checkpoint"]  # a kept checkpoint of a shorter run: extend it
        if index == 1 and not paths["lora"].exists() and ckpt_owner != ckpt_key:
            _move_aside(paths, "an unfinished run's leftovers", warnings)
            ckpt_owner = None
        lora_taken = paths["lora"].exists() or paths["csv"].exists()
        ckpt_taken = ckpt_owner is not None and ckpt_owner != ckpt_key
        if not lora_taken and not ckpt_taken:
            return candidate, None, resumable
    raise TrainError(f"no free output name for {config.output_name!r} in {config.output_path}")
