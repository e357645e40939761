"""The LoRA trainer (the tutorial's DiffSynth ``train_kolors_lora.py`` math, for every family), as library code.

Math (``kolors.md``): peft LoRA on the family's target modules (``to_q``, ``to_k``, ``to_v``,
``to_out.0`` of every UNet attention), LoRA parameters in fp32, AdamW (or 8-bit AdamW on CUDA)
with diffusers' learning-rate schedules, one uniform integer timestep per batch,
``noisy = sqrt(ab)·x0 + sqrt(1-ab)·eps`` from the family's ``alphas_cumprod``, loss
``MSE(unet(noisy, t, **family.unet_kwargs(...)), eps)`` (optionally min-SNR-γ weighted, with
kohya's noise offset), gradients accumulated over ``gradient_accumulation_steps`` micro-batches.
With ``text_encoder_lr > 0`` the CLIP text encoders get LoRA too (:mod:`.train_text`): captions
are encoded every step through them, in a second optimiser parameter group at that learning rate
(the LR schedule scales both groups); otherwise the cached embeddings condition the UNet.
An epoch is ``steps_per_epoch`` random samples. What differs between families (conditioning,
schedule, file naming, sample rendering) is in :mod:`.families`; how batches are drawn (buckets,
repeats, caption variants) in :mod:`.train_batches`.

Reproducibility. All randomness of step ``s`` (sample indices, augmentation variants, timestep,
noise, caption choices; micro-batch ``m > 0`` uses ``(s, m)``) comes from a CPU generator seeded
with ``sha256(seed, s)``, and the LoRA init from one seeded with ``sha256(seed, "init")``; network
dropout runs under a forked global RNG seeded from that generator, so nothing depends on the
global RNG state. A checkpoint therefore needs
only the step, the LoRA weights (the text encoders' too), the optimiser, LR-schedule (and loss-scaler) state and the loss-log state,
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
    kohya_metadata,
    load_checkpoint,
    read_lora_metadata,
    write_lora_file,
)
from .families import KOLORS, TrainFamily, get_family
from .latent_cache import CachedData
from .loss_log import LossLog, draw_loss_png
from .optim import check_optimizer, make_lr_scheduler, make_optimizer, min_snr_weight, offset_noise
from .samples import SampleFn, grid_path, write_grid
from .train_adapter import TrainableLora
from .train_batches import Batch, BatchSource
from .train_config import (
    Fingerprints,
    TrainConfig,
    TrainError,
    TrainingCancelled,
    TrainResult,
    find_existing,
    run_key,
)
from .train_output import choose_output
from .train_text import TextEncoders, TrainableText

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
    return KOLORS.alphas_cumprod(scheduler)


def _derived_generator(seed: int, tag: str | int) -> torch.Generator:
    digest = hashlib.sha256(f"graphgen-lora:{seed}:{tag}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _resolve_precision(
    precision: str, device: torch.device, notes: list[str]
) -> tuple[torch.dtype | None, bool]:
    """Returns ``(autocast dtype or None, use a gradient scaler)``; a CPU's fp32 fallback goes to ``notes``."""
    if precision == "32":
        return None, False
    if precision == "bf16-mixed":
        return torch.bfloat16, False
    if device.type == "cpu":
        notes.append('precision "16-mixed" on a CPU trains in fp32 (fp16 autocast is slower there)')
        return None, False
    return torch.float16, True


def _make_scaler(device: torch.device, warnings: list[str]) -> torch.amp.GradScaler | None:
    """fp16 loss scaler for ``device``; ``None`` (with a warning) where torch has none."""
    try:
        return torch.amp.GradScaler(device.type)
    except (RuntimeError, ValueError) as exc:
        warnings.append(f"no fp16 loss scaler on {device.type} ({exc}): gradients may underflow")
        return None


def _check_data(data: CachedData, config: TrainConfig) -> None:
    if not data.items:
        raise TrainError("the training data is empty")
    if data.spec.params != config.preprocess() or data.spec.buckets != config.buckets():
        raise TrainError(
            f"the cached data was prepared for {data.spec.params} (buckets {data.spec.buckets}) but the config "
            f"asks for {config.preprocess()} (buckets {config.buckets()}): rebuild the cache with the config's "
            "height/width/crop/flip/bucket settings"
        )
    if config.caption_dropout_rate > 0 and data.empty_text is None:
        raise TrainError("caption_dropout_rate needs the empty caption in the cache: rebuild it with the config")
    if data.spec.buckets is None:
        variants = {tuple(it.latents.shape) for it in data.items}
        expected = (config.height // 8, config.width // 8)
        if len(variants) != 1 or next(iter(variants))[-2:] != expected:
            raise TrainError(
                f"cached latents have shapes {sorted(variants)}, expected [V, 4, {expected[0]}, {expected[1]}]"
            )


def _metadata(
    config: TrainConfig, fps: Fingerprints, data: CachedData, steps: int, extra: dict[str, Any],
    family: TrainFamily,
) -> dict[str, str]:
    return {
        **kohya_metadata(config, data, family, steps),
        "graphgen.version": "1",
        "graphgen.family": family.name,
        "graphgen.base_model": fps.base_model,
        "graphgen.rank": str(config.lora_rank),
        "graphgen.alpha": repr(float(config.lora_alpha)),
        "graphgen.target_modules": json.dumps(config.target_modules()),
        "graphgen.steps": str(steps),
        "graphgen.dataset_fingerprint": data.dataset_fingerprint,
        "graphgen.data_fingerprint": fps.data,
        "graphgen.training_params": json.dumps(
            dataclasses.asdict(config), sort_keys=True, ensure_ascii=False
        ),
        "graphgen.run_key": run_key(config, fps),
        "graphgen.run_info": json.dumps(extra, sort_keys=True),
    }


def _sample_steps(config: TrainConfig) -> set[int]:
    """Steps after which sample grids are rendered: every N and the last (none when off)."""
    n, total = config.sample_every_n_steps, config.total_steps
    return {*range(n, total + 1, n), total} if n else set()


def train_lora(
    config: TrainConfig,
    unet: torch.nn.Module,
    *,
    data: CachedData,
    base_model_id: str,
    scheduler: Any | None = None,
    progress: ProgressFn | None = None,
    check_cancelled: Callable[[], bool | None] | None = None,
    family: TrainFamily | None = None,
    sampler: SampleFn | None = None,
    on_sample: Callable[[int, Path], None] | None = None,
    text_encoders: TextEncoders | None = None,
) -> TrainResult:
    """Trains a LoRA for a UNet of ``family`` on cached latents and embeddings (and the text encoders').

    Args:
        config: Training settings.
        unet: The base UNet, on the training device; it is not modified.
        data: Cached latents and embeddings (:func:`~graphgen_nodes.lora.latent_cache.build_cache`).
        base_model_id: Identity string of the base UNet (recorded and used for re-run skipping).
        scheduler: Source of ``alphas_cumprod`` (default: the family's schedule).
        progress: Called after every step with ``(step, total, smoothed_loss, steps_per_s)``.
        check_cancelled: Called before every step. Returning True saves a checkpoint and raises
            :class:`TrainingCancelled`. Raising propagates as is, like a crash: the run resumes
            from the last periodic checkpoint.
        family: The model family's adapter (default: ``config.family``'s).
        sampler: Renders the sample prompts with the model being trained (see :mod:`.samples`);
            called every ``config.sample_every_n_steps`` steps and at the end.
        on_sample: Called with ``(step, grid path)`` after each sample grid is written.
        text_encoders: The family's text encoders on the training device; needed (and trained,
            see :mod:`.train_text`) when ``config.text_encoder_lr > 0``, ignored otherwise.

    Returns:
        The result; the LoRA, loss CSV and loss PNG are in ``config.output_path``.

    Raises:
        TrainError: Bad config, data not matching the config, non-finite loss.
        TrainingCancelled: ``check_cancelled`` returned True.
    """
    config.validate()
    family = family or get_family(config.family)
    fps = Fingerprints(data.fingerprint, base_model_id)
    warnings: list[str] = []
    notes: list[str] = []  # information, not problems (the default precision's CPU fallback)
    config, reuse, resume_from = choose_output(config, fps, warnings)
    paths = config.paths()
    if reuse is not None:
        meta = read_lora_metadata(reuse) or {}
        return TrainResult(reuse, config.total_steps, True, 0, math.nan, paths["csv"], paths["png"], 0.0, meta)
    _check_data(data, config)
    first = next(unet.parameters())
    device = first.device
    problem = check_optimizer(config.optimizer, device)
    if problem:
        raise TrainError(problem)
    autocast_dtype, use_scaler = _resolve_precision(config.precision, device, notes)
    input_dtype = first.dtype if autocast_dtype is None else torch.float32
    if autocast_dtype is None and first.dtype != torch.float32:
        warnings.append(
            f"precision 32 with a {str(first.dtype).replace('torch.', '')} base UNet runs the base in that "
            "dtype without loss scaling: use 16-mixed/bf16-mixed, or pass an fp32 UNet"
        )
    train_text = config.text_encoder_lr > 0
    if train_text and text_encoders is None:
        raise TrainError("text_encoder_lr > 0 needs the text encoders (connect the checkpoint's CLIP), "
                         "or set text_encoder_lr to 0")
    alphas = family.alphas_cumprod(scheduler)
    batches = BatchSource(data, family, config.batch_size, len(alphas), config.caption_dropout_rate,
                          live_captions=train_text)
    total = config.total_steps
    bases = [unet, *(text_encoders.modules.values() if train_text and text_encoders else ())]
    flags = [(p, p.requires_grad) for base in bases for p in base.parameters()]
    log = LossLog(paths["csv"])
    try:
        lora = TrainableLora(
            unet, config.lora_rank, config.lora_alpha, config.target_modules(),
            _derived_generator(config.seed, "init"), dropout=config.network_dropout,
        )
        text = TrainableText(
            text_encoders, config.lora_rank, config.lora_alpha,
            lambda name: _derived_generator(config.seed, f"init-{name}"), dropout=config.network_dropout,
        ) if train_text and text_encoders else None
        for p, _ in flags:
            p.requires_grad_(False)
        work, params = lora.model, lora.parameters()
        if config.use_gradient_checkpointing:
            work.enable_gradient_checkpointing()
        work.train()
        groups: list[Any] = params
        if text is not None:
            text.train()
            groups = [{"params": params, "lr": config.learning_rate},
                      {"params": text.parameters(), "lr": config.text_encoder_lr}]
        opt = make_optimizer(config.optimizer, groups, config.learning_rate, config.weight_decay, device)
        lr_sched = make_lr_scheduler(config.lr_scheduler, opt, config.lr_warmup_steps, total)
        scaler = _make_scaler(device, warnings) if use_scaler else None
        start, elapsed = 0, 0.0
        ckpt_key = run_key(config, fps, with_length=False)
        ckpt = load_checkpoint(resume_from) if config.resume and resume_from is not None else None
        if ckpt is not None and ckpt["step"] > total:
            warnings.append(f"ignored checkpoint at step {ckpt['step']}: past this run's {total} steps")
            ckpt = None
        if ckpt is not None:
            lora.load_state(ckpt["lora"])
            if text is not None:
                text.load_state(ckpt.get("text_lora") or {})
            opt.load_state_dict(ckpt["optimizer"])
            if ckpt.get("lr_scheduler"):
                lr_sched.load_state_dict(ckpt["lr_scheduler"])
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
                    **({"text_lora": text.state()} if text is not None else {}),
                    "optimizer": opt.state_dict(),
                    "lr_scheduler": lr_sched.state_dict(),
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

        def render_samples(step: int) -> None:
            if sampler is None:
                return
            work.eval()
            if text is not None:
                text.train(False)
            with torch.no_grad():
                images = sampler(work, text.encode if text is not None else None)
            work.train()
            if text is not None:
                text.train()
            path = write_grid(images, grid_path(paths["samples"], step), f"{config.output_name} step {step}/{total}")
            if on_sample is not None:
                on_sample(step, path)

        def conditioning(b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
            """The batch's text conditioning: cached, or encoded now through the training text encoders."""
            return (b.embeds, b.pooled) if text is None else text.encode(b.captions)

        sample_at = _sample_steps(config) if sampler is not None else set()
        accum = config.gradient_accumulation_steps
        cuda = [device] if device.type == "cuda" else []
        window: deque[float] = deque(maxlen=20)
        smoothed = log.rows[-1].smoothed if log.rows else math.nan
        for step in range(start, total):
            if check_cancelled is not None and check_cancelled():
                save_checkpoint(step)
                raise TrainingCancelled(step, paths["checkpoint"])
            t0 = time.perf_counter()
            lr = float(lr_sched.get_last_lr()[0])
            value = 0.0
            for micro in range(accum):
                gen = _derived_generator(config.seed, step if micro == 0 else f"{step}.{micro}")
                b = batches.draw(gen)
                noise = offset_noise(b.noise, config.noise_offset, gen)
                ab = alphas[b.timestep]
                noisy = ab.sqrt() * b.latents + (1.0 - ab).sqrt() * noise
                weight = float(min_snr_weight(ab, config.min_snr_gamma))
                dropout_seed = int(torch.randint(0, 2**62, (1,), generator=gen)) if config.network_dropout else 0
                with torch.random.fork_rng(devices=cuda, enabled=bool(config.network_dropout)):
                    if config.network_dropout:
                        torch.manual_seed(dropout_seed)
                    with torch.autocast(
                        device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
                    ):
                        embeds, pooled = conditioning(b)
                        pred = work(
                            noisy.to(device, input_dtype),
                            b.timestep.expand(len(b.items)).to(device),
                            **family.unet_kwargs(
                                embeds.to(device, input_dtype),
                                pooled.to(device, input_dtype),
                                b.time_ids.to(device, input_dtype),
                            ),
                        ).sample
                    loss = F.mse_loss(pred.float(), noise.to(device))
                    if weight != 1.0:
                        loss = loss * weight
                    scaled = loss / accum if accum > 1 else loss
                    if scaler is not None:
                        scaler.scale(scaled).backward()
                    else:
                        scaled.backward()
                value += float(loss.detach()) / accum
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            lr_sched.step()
            opt.zero_grad(set_to_none=True)
            if scaler is None and not math.isfinite(value):
                raise TrainError(
                    f"loss became {value} at step {step + 1}: lower learning_rate or use precision 32"
                )
            dt = time.perf_counter() - t0
            elapsed += dt
            window.append(dt)
            smoothed = log.add(step + 1, value, lr, elapsed)
            if progress is not None:
                progress(step + 1, total, smoothed, len(window) / max(sum(window), 1e-9))
            if config.save_every_n_steps and (step + 1) % config.save_every_n_steps == 0 and step + 1 < total:
                save_checkpoint(step + 1)
            if step + 1 in sample_at:
                render_samples(step + 1)
        info = {
            "device": str(device),
            "effective_precision": str(autocast_dtype or first.dtype).replace("torch.", ""),
            "resumed_from": start,
            "elapsed_s": round(elapsed, 3),
        }
        meta = _metadata(config, fps, data, total, info, family)
        write_lora_file(paths["lora"], lora.state(), alpha=config.lora_alpha, metadata=meta,
                        layout=config.save_format if config.save_format != "kohya" else family.kohya_layout,
                        text_encoders=text.file_state() if text is not None else None)
        draw_loss_png(log.rows, paths["png"], title=f"{config.output_name}: loss, {total} steps")
        if config.keep_checkpoint:
            save_checkpoint(total)
        elif paths["checkpoint"].exists():
            paths["checkpoint"].unlink()
        return TrainResult(
            paths["lora"], total, False, start, smoothed, paths["csv"], paths["png"], elapsed, meta, warnings, notes
        )
    finally:
        log.close()
        for p, flag in flags:
            p.requires_grad_(flag)
