"""Kolors LoRA trainer (the tutorial's DiffSynth ``train_kolors_lora.py`` math), as library code.

Math (``kolors.md``): peft LoRA on ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of every UNet
attention, LoRA parameters in fp32, AdamW with a constant learning rate, one uniform integer
timestep in ``[0, 1100)`` per batch, ``noisy = sqrt(ab)·x0 + sqrt(1-ab)·eps`` from the
scheduler's ``alphas_cumprod``, loss ``MSE(unet(noisy, t, embeds, pooled, time_ids), eps)`` with
``time_ids = [H, W, 0, 0, H, W]``. An epoch is ``steps_per_epoch`` random samples.

Reproducibility. All randomness of step ``s`` (sample indices, augmentation variants, timestep,
noise) comes from a CPU generator seeded with ``sha256(seed, s)``, and the LoRA init from one
seeded with ``sha256(seed, "init")``; nothing reads the global RNGs. A checkpoint therefore needs
only the step, the LoRA weights, the optimiser (and loss-scaler) state and the loss-log state,
and a resumed run gives the same weights as an uninterrupted one (bit for bit on CPU fp32).

The base UNet is never modified: training runs on a structural copy of it that shares its
weight tensors (no extra memory) and carries the LoRA layers; the shared weights' frozen
``requires_grad`` flags are restored afterwards. The UNet must already be on the training device.

Precision: ``"32"``; ``"16-mixed"`` (fp16 autocast + a gradient scaler) and ``"bf16-mixed"``
(bf16 autocast) on CUDA/MPS. On a CPU, ``"16-mixed"`` trains in fp32 with a warning (CPU fp16
autocast works in torch but measured ~3.5x slower than fp32 on the tiny UNet and needs loss
scaling); ``"bf16-mixed"`` is honoured on a CPU (fast only with bf16 hardware).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .checkpoint import (
    CHECKPOINT_VERSION,
    atomic_torch_save,
    load_checkpoint,
    read_lora_metadata,
    write_lora_file,
)
from .latent_cache import CachedData
from .loss_log import LossLog, draw_loss_png
from .train_adapter import TrainableLora
from .train_config import (
    TARGET_MODULES,
    Fingerprints,
    TrainConfig,
    TrainError,
    TrainingCancelled,
    TrainResult,
    find_existing,
    run_key,
)

__all__ = [
    "Fingerprints",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "TrainingCancelled",
    "choose_output",
    "find_existing",
    "kolors_alphas_cumprod",
    "run_key",
    "train_lora",
]

#: Progress callback: ``(step, total, smoothed_loss, steps_per_second)``.
ProgressFn = Callable[[int, int, float, float], None]


def kolors_alphas_cumprod(scheduler: Any | None = None) -> torch.Tensor:
    """``alphas_cumprod`` (fp32, CPU) of the scheduler, or of Kolors' own schedule when ``None``.

    Args:
        scheduler: A diffusers scheduler with ``alphas_cumprod`` (Kolors: scaled_linear,
            0.00085..0.014, 1100 steps).

    Returns:
        ``[num_train_timesteps]`` tensor.
    """
    if scheduler is not None and getattr(scheduler, "alphas_cumprod", None) is not None:
        return scheduler.alphas_cumprod.detach().to("cpu", torch.float32)
    betas = torch.linspace(0.00085**0.5, 0.014**0.5, 1100, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def _derived_generator(seed: int, tag: str | int) -> torch.Generator:
    digest = hashlib.sha256(f"graphgen-lora:{seed}:{tag}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _resolve_precision(
    precision: str, device: torch.device, warnings: list[str]
) -> tuple[torch.dtype | None, bool]:
    """Returns ``(autocast dtype or None, use a gradient scaler)``."""
    if precision == "32":
        return None, False
    if precision == "bf16-mixed":
        return torch.bfloat16, False
    if device.type == "cpu":
        warnings.append('precision "16-mixed" on a CPU trains in fp32 (fp16 autocast is slower there)')
        return None, False
    return torch.float16, True


def _make_scaler(device: torch.device, warnings: list[str]) -> torch.amp.GradScaler | None:
    """fp16 loss scaler for ``device``; ``None`` (with a warning) where torch has none."""
    try:
        return torch.amp.GradScaler(device.type)
    except (RuntimeError, ValueError) as exc:
        warnings.append(f"no fp16 loss scaler on {device.type} ({exc}): gradients may underflow")
        return None


def _stack_data(data: CachedData, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not data.items:
        raise TrainError("the training data is empty")
    if data.spec.params != config.preprocess():
        raise TrainError(
            f"the cached data was prepared for {data.spec.params} but the config asks for "
            f"{config.preprocess()}: rebuild the cache with the config's height/width/crop/flip"
        )
    variants = {tuple(it.latents.shape) for it in data.items}
    expected = (config.height // 8, config.width // 8)
    if len(variants) != 1 or next(iter(variants))[-2:] != expected:
        raise TrainError(
            f"cached latents have shapes {sorted(variants)}, expected [V, 4, {expected[0]}, {expected[1]}]"
        )
    latents = torch.stack([it.latents.float() for it in data.items])
    embeds = torch.stack([it.prompt_embeds for it in data.items])
    pooled = torch.stack([it.pooled for it in data.items])
    return latents, embeds, pooled


def _metadata(
    config: TrainConfig, fps: Fingerprints, data: CachedData, steps: int, extra: dict[str, Any]
) -> dict[str, str]:
    return {
        "graphgen.version": "1",
        "graphgen.base_model": fps.base_model,
        "graphgen.rank": str(config.lora_rank),
        "graphgen.alpha": repr(float(config.lora_alpha)),
        "graphgen.target_modules": json.dumps(TARGET_MODULES),
        "graphgen.steps": str(steps),
        "graphgen.dataset_fingerprint": data.dataset_fingerprint,
        "graphgen.data_fingerprint": fps.data,
        "graphgen.training_params": json.dumps(
            dataclasses.asdict(config), sort_keys=True, ensure_ascii=False
        ),
        "graphgen.run_key": run_key(config, fps),
        "graphgen.run_info": json.dumps(extra, sort_keys=True),
    }


def _checkpoint_key(path: Path) -> str | None:
    try:
        ckpt = load_checkpoint(path)
    except ValueError:
        return "<unreadable>"
    return None if ckpt is None else str(ckpt.get("run_key"))


def choose_output(config: TrainConfig, fps: Fingerprints) -> tuple[TrainConfig, Path | None, Path | None]:
    """Where this run writes, never replacing another run's LoRA or checkpoint.

    Tries `output_name`, then `output_name_00002`, ... and takes the first name whose files are
    either absent or this run's own: a finished LoRA with this run's key is reused (when
    `reuse_existing`), a checkpoint with this run's key is resumed. A LoRA or checkpoint of a
    different run (other data or parameters) keeps its name and files. A checkpoint that extends a
    kept, shorter run of the same settings is resumed even though the new LoRA gets a new name.

    Returns:
        `(config with the chosen output_name, LoRA to reuse or None, checkpoint to resume or None)`.
    """
    ckpt_key = run_key(config, fps, with_length=False)
    resumable: Path | None = None
    for index in range(1, 10_000):
        name = config.output_name if index == 1 else f"{config.output_name}_{index:05d}"
        candidate = dataclasses.replace(config, output_name=name)
        paths = candidate.paths()
        if config.reuse_existing and (hit := find_existing(candidate, fps)) is not None:
            return candidate, hit, None
        ckpt_owner = _checkpoint_key(paths["checkpoint"]) if paths["checkpoint"].exists() else None
        if ckpt_owner == ckpt_key:
            if not paths["lora"].exists():
                return candidate, None, paths["checkpoint"]  # this run, interrupted: resume in place
            if resumable is None:
                resumable = paths["checkpoint"]  # a kept checkpoint of a shorter run: extend it
        lora_taken = paths["lora"].exists() or paths["csv"].exists()
        ckpt_taken = ckpt_owner is not None and ckpt_owner != ckpt_key
        if not lora_taken and not ckpt_taken:
            return candidate, None, resumable
    raise TrainError(f"no free output name for {config.output_name!r} in {config.output_path}")


def train_lora(
    config: TrainConfig,
    unet: torch.nn.Module,
    *,
    data: CachedData,
    base_model_id: str,
    scheduler: Any | None = None,
    progress: ProgressFn | None = None,
    check_cancelled: Callable[[], bool | None] | None = None,
) -> TrainResult:
    """Trains a LoRA for the Kolors UNet on cached latents and embeddings.

    Args:
        config: Training settings.
        unet: The base Kolors UNet, on the training device; it is not modified.
        data: Cached latents and embeddings (:func:`~graphgen_nodes.lora.latent_cache.build_cache`).
        base_model_id: Identity string of the base UNet (recorded and used for re-run skipping).
        scheduler: Source of ``alphas_cumprod`` (default: Kolors' schedule).
        progress: Called after every step with ``(step, total, smoothed_loss, steps_per_s)``.
        check_cancelled: Called before every step. Returning True saves a checkpoint and raises
            :class:`TrainingCancelled`. Raising propagates as is, like a crash: the run resumes
            from the last periodic checkpoint.

    Returns:
        The result; the LoRA, loss CSV and loss PNG are in ``config.output_path``.

    Raises:
        TrainError: Bad config, data not matching the config, non-finite loss.
        TrainingCancelled: ``check_cancelled`` returned True.
    """
    config.validate()
    fps = Fingerprints(data.fingerprint, base_model_id)
    config, reuse, resume_from = choose_output(config, fps)
    paths = config.paths()
    if reuse is not None:
        meta = read_lora_metadata(reuse) or {}
        return TrainResult(reuse, config.total_steps, True, 0, math.nan, paths["csv"], paths["png"], 0.0, meta)
    warnings: list[str] = []
    latents_all, embeds_all, pooled_all = _stack_data(data, config)
    first = next(unet.parameters())
    device = first.device
    autocast_dtype, use_scaler = _resolve_precision(config.precision, device, warnings)
    input_dtype = first.dtype if autocast_dtype is None else torch.float32
    if autocast_dtype is None and first.dtype != torch.float32:
        warnings.append(
            f"precision 32 with a {str(first.dtype).replace('torch.', '')} base UNet runs the base in that "
            "dtype without loss scaling: use 16-mixed/bf16-mixed, or pass an fp32 UNet"
        )
    alphas = kolors_alphas_cumprod(scheduler)
    total = config.total_steps
    flags = [p.requires_grad for p in unet.parameters()]
    log = LossLog(paths["csv"])
    try:
        lora = TrainableLora(
            unet, config.lora_rank, config.lora_alpha, TARGET_MODULES, _derived_generator(config.seed, "init")
        )
        for p in unet.parameters():
            p.requires_grad_(False)
        work, params = lora.model, lora.parameters()
        if config.use_gradient_checkpointing:
            work.enable_gradient_checkpointing()
        work.train()
        opt = torch.optim.AdamW(
            params,
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            fused=device.type == "cuda" or None,
        )
        scaler = _make_scaler(device, warnings) if use_scaler else None
        start, elapsed = 0, 0.0
        ckpt_key = run_key(config, fps, with_length=False)
        ckpt = load_checkpoint(resume_from) if config.resume and resume_from is not None else None
        if ckpt is not None and ckpt["step"] > total:
            warnings.append(f"ignored checkpoint at step {ckpt['step']}: past this run's {total} steps")
            ckpt = None
        if ckpt is not None:
            lora.load_state(ckpt["lora"])
            opt.load_state_dict(ckpt["optimizer"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        log.start(start, ckpt["loss_state"] if ckpt else None)

        def save_checkpoint(step: int) -> None:
            atomic_torch_save(
                {
                    "version": CHECKPOINT_VERSION,
                    "run_key": ckpt_key,
                    "step": step,
                    "elapsed": elapsed,
                    "lora": lora.state(),
                    "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "loss_state": log.state(),
                    "rng": {
                        "scheme": "torch.Generator(sha256('graphgen-lora:{seed}:{step}'))",
                        "seed": config.seed,
                    },
                },
                paths["checkpoint"],
            )
            draw_loss_png(log.rows, paths["png"], title=f"{config.output_name}: loss, step {step}/{total}")

        batch, (h, w) = config.batch_size, (config.height, config.width)
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=input_dtype, device=device).repeat(batch, 1)
        n_items, n_var = latents_all.shape[0], latents_all.shape[1]
        window: deque[float] = deque(maxlen=20)
        smoothed = log.rows[-1].smoothed if log.rows else math.nan
        for step in range(start, total):
            if check_cancelled is not None and check_cancelled():
                save_checkpoint(step)
                raise TrainingCancelled(step, paths["checkpoint"])
            t0 = time.perf_counter()
            gen = _derived_generator(config.seed, step)
            idx = torch.randint(n_items, (batch,), generator=gen)
            var = torch.randint(n_var, (batch,), generator=gen)
            t = torch.randint(0, len(alphas), (1,), generator=gen)
            noise = torch.randn((batch, *latents_all.shape[2:]), generator=gen)
            ab = alphas[t]
            noisy = ab.sqrt() * latents_all[idx, var] + (1.0 - ab).sqrt() * noise
            with torch.autocast(
                device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
            ):
                pred = work(
                    noisy.to(device, input_dtype),
                    t.expand(batch).to(device),
                    encoder_hidden_states=embeds_all[idx].to(device, input_dtype),
                    added_cond_kwargs={
                        "text_embeds": pooled_all[idx].to(device, input_dtype),
                        "time_ids": time_ids,
                    },
                ).sample
            loss = F.mse_loss(pred.float(), noise.to(device))
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            opt.zero_grad(set_to_none=True)
            value = float(loss.detach())
            if scaler is None and not math.isfinite(value):
                raise TrainError(
                    f"loss became {value} at step {step + 1}: lower learning_rate or use precision 32"
                )
            dt = time.perf_counter() - t0
            elapsed += dt
            window.append(dt)
            smoothed = log.add(step + 1, value, config.learning_rate, elapsed)
            if progress is not None:
                progress(step + 1, total, smoothed, len(window) / max(sum(window), 1e-9))
            if config.save_every_n_steps and (step + 1) % config.save_every_n_steps == 0 and step + 1 < total:
                save_checkpoint(step + 1)
        info = {
            "device": str(device),
            "effective_precision": str(autocast_dtype or first.dtype).replace("torch.", ""),
            "resumed_from": start,
            "elapsed_s": round(elapsed, 3),
        }
        meta = _metadata(config, fps, data, total, info)
        write_lora_file(paths["lora"], lora.state(), alpha=config.lora_alpha, metadata=meta)
        draw_loss_png(log.rows, paths["png"], title=f"{config.output_name}: loss, {total} steps")
        if config.keep_checkpoint:
            save_checkpoint(total)
        elif paths["checkpoint"].exists():
            paths["checkpoint"].unlink()
        return TrainResult(
            paths["lora"], total, False, start, smoothed, paths["csv"], paths["png"], elapsed, meta, warnings
        )
    finally:
        log.close()
        for p, flag in zip(unet.parameters(), flags, strict=True):
            p.requires_grad_(flag)
