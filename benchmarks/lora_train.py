"""graphgen's LoRA trainer vs a plain diffusers + peft loop, side by side in one run.

    python benchmarks/lora_train.py                     # tiny Kolors, CPU (about 2 minutes)
    python benchmarks/lora_train.py --family sdxl       # tiny SDXL (or sd15), CPU
    python benchmarks/lora_train.py --size 128 --steps 20 --gradient-checkpointing
    python benchmarks/lora_train.py --full              # GPU: full-size random-weight Kolors, 1024², rank 16
                                                        # (no CUDA: a quick dry run with the tiny configs)

Three variants train the same LoRA (targets ``to_q``/``to_k``/``to_v``/``to_out.0``, same rank,
alpha, AdamW, learning rate, epsilon-MSE on Kolors' schedule) on the same model and the same small
synthetic captioned dataset (``graphgen.testing.demo_data``: tutorial layout,
``train/metadata.csv`` with a BOM, square images at twice the training size, so every image is
resized on its way in):

(a) graphgen's ``train_lora`` on cached VAE latents and ChatGLM embeddings; the cache is built
    beforehand (by its own process, timed and reported separately), so this process loads only
    the UNet;
(b) graphgen on the first run: ``prepare_data`` builds the cache from scratch (VAE and ChatGLM
    loaded), then ``train_lora``; its steps/s include the cache build;
(c) a plain reference loop, written out below: diffusers ``UNet2DConditionModel`` +
    ``unet.add_adapter(peft.LoraConfig(...))``, every step loads the image, encodes it with the
    VAE and the caption with ChatGLM (no caching), then the same loss and AdamW step.

Each variant runs in its own child process (peak RSS is the child's ``ru_maxrss``); the
children run in rotating order over ``--rounds`` rounds and medians are printed. On the CPU
every child uses ``--threads`` torch threads (default 1): on a small shared machine two OpenMP
threads next to another busy process were measured 20-80x slower per step than one. Steps/s is
given two ways: "run" = N steps / (cache load or build + trainer setup + N steps + saving the
LoRA), "steady" = per-step rate after ``--warmup`` steps. Model loading is reported apart. On a
shared CPU the steady rate is also given per second of the child's own CPU time (one thread), which
other load on the machine barely moves.

Sanity check: the reference loop draws its per-step randomness (sample, timestep, noise) and
its LoRA init exactly as graphgen's trainer does (``sha256``-derived generators), so the three
loss curves should agree step by step: (a) and (b) bit for bit, (c) up to float rounding
(batched vs one-at-a-time encoding). The benchmark prints the per-variant loss after N steps
and the largest per-step difference.

``--family sd15|sdxl`` runs the same three variants on the tiny SD1.5/SDXL checkpoints
(``graphgen.testing.tiny_sd``): CLIP text encoding (both encoders and the pooled output for SDXL,
as the SD pack's ``CLIPTextEncode``) in place of ChatGLM, the SD schedule, SDXL's size/crop ids as
graphgen's trainer gives them (original image size, crop, target size). ``--full`` is Kolors only.

``--full`` (CUDA): full-size Kolors with random weights from the real configs (UNet 2.6 B,
SDXL VAE, ChatGLM3-6B), fp16 weights, built on the GPU with explicit init (no download), at
1024², rank 16, ``16-mixed``, gradient checkpointing on by default. Prints steps/s and peak
GPU memory of the training phase. graphgen keeps the text encoder and the VAE off the GPU
while the UNet trains (and the UNet off the GPU while the cache is built); the reference
keeps all three on the GPU, as DiffSynth's trainer does. Without CUDA, ``--full`` runs the same
code with the tiny configs on the CPU (a dry run; no memory figures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {
    "a": "(a) graphgen, cache built beforehand",
    "b": "(b) graphgen, cache built in the run",
    "c": "(c) reference: diffusers+peft, encode every step",
}
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]


# ---------------------------------------------------------------------------- shared helpers


def step_generator(seed: int, tag: str | int) -> Any:
    """The CPU generator graphgen's trainer uses for step ``tag`` (``sha256``-derived)."""
    import torch

    digest = hashlib.sha256(f"graphgen-lora:{seed}:{tag}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def import_stack() -> float:
    """Imports what every variant uses (torch, diffusers, the Kolors ChatGLM, peft, graphgen's
    trainer), so that "RSS after imports" is the same baseline in every child; returns it in MiB."""
    import diffusers  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
    from diffusers.pipelines.kolors import ChatGLMModel  # noqa: F401

    from graphgen_nodes.kolors import loading  # noqa: F401
    from graphgen_nodes.lora import latent_cache, trainer  # noqa: F401

    return rss_now_mib()


def rss_now_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_model(part: str, device: Any, tiny_configs: bool) -> Any:
    """Full-size (or tiny-config) Kolors part with explicit random init, built on ``device``.

    As ``benchmarks/kolors_inference.py``: weights N(0, 0.02), norm scales 1, biases 0 (ChatGLM
    leaves them uninitialised otherwise); fp16, or fp32 with the tiny configs. Each part has its
    own seed, so every process builds the same weights whatever else it builds.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.kolors import ChatGLMModel
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig

    from graphgen.testing import tiny_kolors as cfg

    dtype = torch.float32 if tiny_configs else torch.float16
    torch.manual_seed({"unet": 0, "vae": 1, "text": 2}[part])
    model: Any
    with torch.device(device):
        if part == "unet":
            model = UNet2DConditionModel(**(cfg.TINY_UNET_CONFIG if tiny_configs else cfg.KOLORS_UNET_CONFIG))
        elif part == "vae":
            model = AutoencoderKL(**(cfg.TINY_VAE_CONFIG if tiny_configs else cfg.SDXL_VAE_CONFIG))
        else:
            config = ChatGLMConfig(**(cfg.TINY_CHATGLM_CONFIG if tiny_configs else cfg.KOLORS_CHATGLM_CONFIG))
            model = ChatGLMModel(config, empty_init=False)
        model = model.to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.02)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
    return model.eval()


class _OnDevice:
    """The least a model handle offers the SD pack's text encoding: ``.use()`` gives the model."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def use(self) -> Any:
        import contextlib

        return contextlib.nullcontext(self.model)


def sd_parts(family: str) -> tuple[Any, Any, Any]:
    """Tiny SD1.5/SDXL ``(unet, vae, encode)``; ``encode(captions) -> (embeds [N, 77, D], pooled [N, P])``.

    ``encode`` is the SD pack's CLIP encoding (as ``TrainLoRA`` caches it), one caption at a time.
    """
    import torch

    from graphgen.testing.tiny_sd import build_tiny_sd
    from graphgen_nodes.sd.encode import encode_text
    from graphgen_nodes.sd.handles import SDClip

    tiny = build_tiny_sd(family)  # type: ignore[arg-type]
    clip = SDClip(family, clip_l=_OnDevice(tiny.text_encoder) if tiny.text_encoder is not None else None,
                  clip_g=_OnDevice(tiny.text_encoder_2) if tiny.text_encoder_2 is not None else None)

    def encode(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [encode_text(clip, c)[0] for c in captions]
        return torch.cat([r[0][:, :77] for r in rows]), torch.cat([r[1]["pooled_output"] for r in rows])

    return tiny.unet, tiny.vae, encode


def tiny_tokenizer() -> Any:
    """The tiny SentencePiece ChatGLM tokenizer (its ids are valid for the real vocabulary too)."""
    from diffusers.pipelines.kolors import ChatGLMTokenizer

    from graphgen.testing.tiny_kolors import tiny_tokenizer_model

    return ChatGLMTokenizer(vocab_file=str(tiny_tokenizer_model(0)), padding_side="left")


def cuda_sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def gpu_peaks(device: Any) -> dict[str, float]:
    import torch

    if device.type != "cuda":
        return {}
    return {
        "allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
    }


def reset_gpu_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------------------- graphgen (a, b, prep)


def graphgen_child(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from graphgen_nodes.diffusion.schedulers import make_scheduler
    from graphgen_nodes.lora.latent_cache import chatglm_encoder, vae_encoder
    from graphgen_nodes.lora.loss_log import read_loss_csv
    from graphgen_nodes.lora.train_config import TrainConfig, prepare_data
    from graphgen_nodes.lora.trainer import train_lora

    rss_imports = import_stack()
    variant, device = spec["variant"], torch.device(spec["device"])
    out: dict[str, Any] = {"variant": variant, "rss_after_imports_mib": rss_imports}
    config = TrainConfig(
        lora_rank=spec["rank"],
        lora_alpha=spec["alpha"],
        dataset_path=spec["dataset"],
        output_path=spec["out_dir"],
        output_name=f"lora_{variant}",
        max_epochs=1,
        steps_per_epoch=spec["steps"],
        learning_rate=spec["lr"],
        batch_size=1,
        height=spec["size"],
        width=spec["size"],
        center_crop=True,
        random_flip=False,
        use_gradient_checkpointing=spec["gc"],
        precision=spec["precision"],
        seed=spec["seed"],
        save_every_n_steps=0,
        resume=False,
        keep_checkpoint=False,
        reuse_existing=False,
        family=spec["family"],
    )
    models, tiny_configs = spec["models"], spec["tiny_configs"]
    sd = spec["family"] != "kolors"
    ids = {"vae": f"bench-vae:{models or 'random'}:{tiny_configs}", "text": f"bench-te:{models or 'random'}"}

    # Encoders: only (b) and the cache preparation load them. Each goes onto the device only
    # while it encodes (text first, then images), so the UNet never shares the GPU with them.
    encode_images = encode_text = None
    t0 = time.perf_counter()
    if variant in ("b", "prep") and sd:
        _, sd_vae, sd_encode = sd_parts(spec["family"])
        encode_text = sd_encode
        encode_images = vae_encoder(sd_vae, device=device)
    elif variant in ("b", "prep"):
        if models:
            from graphgen_nodes.kolors.loading import load_text_encoder, load_vae

            vae = load_vae(models, torch.float32, "cpu")
            text, tokenizer = load_text_encoder(models, torch.float32, "cpu")
        else:
            vae = random_model("vae", device, tiny_configs).to("cpu")
            text = random_model("text", device, tiny_configs).to("cpu")
            tokenizer = tiny_tokenizer()

        encoders: dict[str, Any] = {}

        def encode_text(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            if "text" not in encoders:
                encoders["text"] = chatglm_encoder(text.to(device), tokenizer, device=device)
            return encoders["text"](prompts)

        def encode_images(pixels: torch.Tensor) -> torch.Tensor:
            if "vae" not in encoders:
                text.to("cpu")
                encoders["vae"] = vae_encoder(vae.to(device), device=device)
            return encoders["vae"](pixels)

    load_encoders_s = time.perf_counter() - t0
    reset_gpu_peak(device)
    t0 = time.perf_counter()
    data, _warnings = prepare_data(
        config,
        cache_dir=spec["cache_dir"],
        vae_id=ids["vae"],
        text_encoder_id=ids["text"],
        encode_images=encode_images,
        encode_text=encode_text,
    )
    if encode_images is not None and not sd:
        vae.to("cpu")
        text.to("cpu")
    cuda_sync(device)
    out["cache_s"] = time.perf_counter() - t0
    out["cache_gpu"] = gpu_peaks(device)
    out["images_encoded"], out["captions_encoded"] = data.images_encoded, data.captions_encoded
    if variant == "prep":
        out["peak_rss_mib"] = peak_rss_mib()
        return out
    if variant == "a":
        assert data.images_encoded == 0 and data.captions_encoded == 0, "the prepared cache was not hit"

    t0 = time.perf_counter()
    if sd:
        unet = sd_parts(spec["family"])[0].to(device)
    elif models:
        from graphgen_nodes.kolors.loading import load_unet

        unet = load_unet(models, torch.float32, device)
    else:
        unet = random_model("unet", device, tiny_configs)
    cuda_sync(device)
    out["load_s"] = load_encoders_s + time.perf_counter() - t0

    reset_gpu_peak(device)
    stamps: list[float] = []
    cpu_stamps: list[float] = []

    def stamp(*_: Any) -> None:
        stamps.append(time.perf_counter())
        cpu_stamps.append(time.process_time())

    t0 = time.perf_counter()
    result = train_lora(
        config,
        unet,
        data=data,
        base_model_id=f"bench-unet:{models or 'random'}:{tiny_configs}",
        scheduler=None if sd else make_scheduler("euler"),
        progress=stamp,
    )
    out["train_s"] = time.perf_counter() - t0
    out["train_gpu"] = gpu_peaks(device)
    out["step_stamps"] = [s - t0 for s in stamps]
    out["cpu_stamps"] = cpu_stamps
    out["losses"] = [row.loss for row in read_loss_csv(result.loss_csv)]
    out["warnings"] = result.warnings
    out["lora_file"] = str(result.lora_path)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


# ---------------------------------------------------------------------------- reference loop (c)


def reference_child(spec: dict[str, Any]) -> dict[str, Any]:
    """A plain LoRA loop: diffusers UNet + peft, image and caption encoded at every step."""
    import csv

    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from PIL import Image
    from safetensors.torch import save_file

    from graphgen.testing.tiny_kolors import KOLORS_SCHEDULER_CONFIG

    out: dict[str, Any] = {"variant": "c", "rss_after_imports_mib": import_stack()}
    device, size, seed = torch.device(spec["device"]), spec["size"], spec["seed"]

    # models: everything on the device, as DiffSynth's trainer does
    t0 = time.perf_counter()
    unet: Any
    vae: Any
    text_encoder: Any
    family = spec["family"]
    sd_encode = None
    if family != "kolors":
        from graphgen_nodes.diffusion.comfy_samplers import SD_SCHEDULER_CONFIG

        unet, vae, sd_encode = sd_parts(family)
        unet, vae, text_encoder, tokenizer = unet.to(device), vae.to(device), torch.nn.Module(), None
    elif spec["models"]:
        root = Path(spec["models"])
        unet = UNet2DConditionModel.from_pretrained(root / "unet", dtype=torch.float32).to(device)
        vae = AutoencoderKL.from_pretrained(root / "vae", dtype=torch.float32).to(device)
        text_encoder = ChatGLMModel.from_pretrained(root / "text_encoder", dtype=torch.float32).to(device)  # type: ignore[arg-type]
        tokenizer = ChatGLMTokenizer.from_pretrained(root / "tokenizer")
    else:
        text_encoder = random_model("text", device, spec["tiny_configs"])
        vae = random_model("vae", device, spec["tiny_configs"])
        unet = random_model("unet", device, spec["tiny_configs"])
        tokenizer = tiny_tokenizer()
    scheduler = EulerDiscreteScheduler.from_config(KOLORS_SCHEDULER_CONFIG if family == "kolors" else
                                                   SD_SCHEDULER_CONFIG)
    cuda_sync(device)
    out["load_s"] = time.perf_counter() - t0

    # dataset: metadata.csv, images read at every step
    meta = Path(spec["dataset"]) / "train" / "metadata.csv"
    with meta.open(encoding="utf-8-sig", newline="") as f:
        rows = [(meta.parent / r["file_name"], r["text"]) for r in csv.DictReader(f)]

    def load_image(path: Path) -> torch.Tensor:
        img = Image.open(path).convert("RGB")
        scale = size / min(img.size)  # shorter side to `size`, bilinear, then centre crop
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
        left, top = int(round((img.width - size) / 2.0)), int(round((img.height - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)

    # precision, as Lightning's names; a CPU trains "16-mixed" in fp32 (as graphgen does there)
    autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(spec["precision"])
    if device.type == "cpu" and autocast_dtype == torch.float16:
        autocast_dtype = None
    scaler = torch.amp.GradScaler(device.type) if autocast_dtype == torch.float16 else None
    unet_dtype = next(unet.parameters()).dtype
    input_dtype = unet_dtype if autocast_dtype is None else torch.float32

    reset_gpu_peak(device)
    t0 = time.perf_counter()
    unet.requires_grad_(False)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=spec["rank"], lora_alpha=spec["alpha"], target_modules=TARGET_MODULES, init_lora_weights=True
        )
    )
    # LoRA in fp32, initialised like graphgen's (same generator and order) so the runs are comparable
    from peft.tuners.lora import LoraLayer

    init = step_generator(seed, "init")
    layers: list[tuple[str, Any]] = sorted(
        ((n, m) for n, m in unet.named_modules() if isinstance(m, LoraLayer)), key=lambda nm: nm[0]
    )
    with torch.no_grad():
        for _, layer in layers:
            layer.lora_A["default"].to(torch.float32)
            layer.lora_B["default"].to(torch.float32)
            a = torch.empty(layer.lora_A["default"].weight.shape)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=init)
            layer.lora_A["default"].weight.copy_(a)
            layer.lora_B["default"].weight.zero_()
    params = [p for _, m in layers for p in (m.lora_A["default"].weight, m.lora_B["default"].weight)]
    if spec["gc"]:
        unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW(params, lr=spec["lr"])
    alphas_cumprod = scheduler.alphas_cumprod.float()
    # Kolors: [H, W, 0, 0, H, W] of the training size (DiffSynth); SDXL: kohya's original image size,
    # crop (0, 0 for a centre-cropped square), target size, as graphgen's SDXL adapter
    orig = spec["image_size"] if family == "sdxl" else size
    time_ids = torch.tensor([[orig, orig, 0, 0, size, size]], dtype=input_dtype, device=device)

    losses, stamps, encode_s, nonfinite = [], [], 0.0, 0
    cpu_stamps: list[float] = []
    for step in range(spec["steps"]):
        gen = step_generator(seed, step)  # same draws, in the same order, as graphgen's trainer
        idx = torch.randint(len(rows), (1,), generator=gen)
        torch.randint(1, (1,), generator=gen)  # crop/flip variant: one with centre crop, no flip
        t = torch.randint(0, len(alphas_cumprod), (1,), generator=gen)
        noise = torch.randn((1, 4, size // 8, size // 8), generator=gen)
        path, caption = rows[int(idx)]
        t_enc = time.perf_counter()
        with torch.no_grad():
            pixels = load_image(path)[None].to(device, vae.dtype)
            x0 = vae.encode(pixels).latent_dist.mean.float().cpu() * vae.config.scaling_factor
            nonfinite += int(not torch.isfinite(x0).all())  # an fp16 VAE may overflow: counted, reported
            if sd_encode is not None:
                prompt_embeds, pooled = (t.to(device) for t in sd_encode([caption]))
            else:
                tokens = tokenizer(
                    [caption], padding="max_length", max_length=256, truncation=True, return_tensors="pt"
                ).to(device)
                hidden = text_encoder(**tokens, output_hidden_states=True).hidden_states
                prompt_embeds = hidden[-2].permute(1, 0, 2)  # penultimate layer, [B, 256, H]
                pooled = hidden[-1][-1]  # last layer, last token, before the final norm
        cuda_sync(device)
        encode_s += time.perf_counter() - t_enc  # bookkeeping for the report, not part of the loop
        ab = alphas_cumprod[t]
        noisy = ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            added = {"text_embeds": pooled.to(input_dtype), "time_ids": time_ids}
            pred = unet(
                noisy.to(device, input_dtype),
                t.to(device),
                encoder_hidden_states=prompt_embeds.to(input_dtype),
                added_cond_kwargs=added if family != "sd15" else None,
            ).sample
        loss = F.mse_loss(pred.float(), noise.to(device))
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        stamps.append(time.perf_counter() - t0)
        cpu_stamps.append(time.process_time())
    lora = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    out["lora_file"] = str(Path(spec["out_dir"]) / "lora_reference.safetensors")
    save_file(lora, out["lora_file"])
    out["train_s"] = time.perf_counter() - t0
    out["train_gpu"] = gpu_peaks(device)
    out["cache_s"] = 0.0
    out["step_stamps"], out["losses"], out["cpu_stamps"] = stamps, losses, cpu_stamps
    out["encode_ms_per_step"] = 1000 * encode_s / spec["steps"]
    out["nonfinite_latents"] = nonfinite
    out["peak_rss_mib"] = peak_rss_mib()
    return out


# ---------------------------------------------------------------------------- parent


def run_child(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    path = work / f"spec_{spec['variant']}_{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    env = dict(os.environ)
    if spec.get("threads"):
        env.update({k: str(spec["threads"]) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    Path(spec["out_dir"]).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, env=env
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"variant {spec['variant']} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT ") :])


def cpu_rate(res: dict[str, Any], steps: int, warmup: int) -> float:
    """Steady steps per second of the child's own CPU time (robust to other load on a shared machine)."""
    cpu = res["cpu_stamps"]
    return (steps - warmup) / max(cpu[-1] - cpu[warmup - 1], 1e-9) if warmup else steps / max(cpu[-1], 1e-9)


def rates(res: dict[str, Any], steps: int, warmup: int) -> tuple[float, float]:
    """(run steps/s, steady steps/s)."""
    run = steps / (res["cache_s"] + res["train_s"])
    stamps = res["step_stamps"]
    steady = (steps - warmup) / (stamps[-1] - stamps[warmup - 1]) if warmup else steps / stamps[-1]
    return run, steady


def compare_loras(paths: dict[str, str]) -> str:
    """Final LoRA factors of the three runs, keys aligned (graphgen writes ``unet.``-prefixed peft names)."""
    from safetensors.torch import load_file

    loras = {
        v: {k.removeprefix("unet."): t.float() for k, t in load_file(p).items()} for v, p in paths.items()
    }
    if not all(set(lo) == set(loras["c"]) for lo in loras.values()):
        return "final LoRA weights: key sets differ between the runs"

    def b_norm(lo: dict[str, Any]) -> float:
        return math.sqrt(sum(float((t**2).sum()) for k, t in lo.items() if "lora_B" in k))

    def diff(x: str, y: str) -> float:
        return max(float((loras[x][k] - loras[y][k]).abs().max()) for k in loras[x])

    scale = max(float(t.abs().max()) for k, t in loras["c"].items() if "lora_B" in k)
    return (
        f"final LoRA weights ({len(loras['c'])} tensors): ||B|| (the learned part, 0 at init) a {b_norm(loras['a']):.4g}, "
        f"b {b_norm(loras['b']):.4g}, c {b_norm(loras['c']):.4g}; max |a-b| {diff('a', 'b'):.2e}, max |a-c| "
        f"{diff('a', 'c'):.2e} (max |B| in c {scale:.2e})"
    )


def fmt_gpu(g: dict[str, float]) -> str:
    return f"{g['allocated_gib']:.2f} / {g['reserved_gib']:.2f}" if g else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--full", action="store_true", help="full-size random-weight Kolors on CUDA (dry run without)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps per run (default 30; --full 20)"
    )
    parser.add_argument(
        "--size", type=int, default=None, help="training size in pixels (default 64; --full 1024)"
    )
    parser.add_argument("--family", choices=["kolors", "sd15", "sdxl"], default="kolors",
                        help="model family (sd15/sdxl: the tiny checkpoints, CPU)")
    parser.add_argument("--rank", type=int, default=None, help="LoRA rank (default 16)")
    parser.add_argument("--alpha", type=float, default=4.0, help="LoRA alpha (default 4, the tutorial's)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--images", type=int, default=4, help="images in the synthetic dataset")
    parser.add_argument("--image-size", type=int, default=None, help="dataset image side (default 2x --size)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per child (default 1 on the CPU, torch's default with CUDA)",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: off on the CPU, on with --full (the tutorial's setting)",
    )
    parser.add_argument(
        "--precision",
        choices=("32", "16-mixed", "bf16-mixed"),
        default=None,
        help='default "32" on the CPU, "16-mixed" with --full',
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds of the three variants (default 5; --full 1)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the steady rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (dataset, models, LoRAs, logs)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        spec = json.loads(Path(args.child).read_text(encoding="utf-8"))
        if spec.get("threads"):
            import torch

            torch.set_num_threads(spec["threads"])
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        res = reference_child(spec) if spec["variant"] == "c" else graphgen_child(spec)
        print("RESULT " + json.dumps(res))
        return
    work = Path(tempfile.mkdtemp(prefix="graphgen-lora-bench-"))
    try:
        benchmark(args, work)
    finally:
        if args.keep:
            print(f"files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def benchmark(args: argparse.Namespace, work: Path) -> None:
    """The parent: dataset and models, the cache for (a), the alternated child runs, the report."""
    import torch

    cuda = torch.cuda.is_available()
    dry = args.full and not cuda
    full = args.full and cuda
    size = args.size or (1024 if full else 64)
    steps = args.steps or (4 if dry else 20 if full else 30)
    rank = args.rank or 16
    rounds = args.rounds or (1 if args.full else 5)
    gc = args.gradient_checkpointing if args.gradient_checkpointing is not None else args.full
    precision = args.precision or ("16-mixed" if args.full else "32")
    warmup = min(args.warmup, steps - 1) if not dry else 1
    device = "cuda" if full else "cpu"

    t0 = time.perf_counter()
    from graphgen.testing.demo_data import write_synthetic_dataset

    image_size = args.image_size or 2 * size
    dataset = write_synthetic_dataset(work / "dataset", count=args.images, size=image_size, seed=args.seed)
    models = None
    if args.full and args.family != "kolors":
        raise SystemExit("--full is Kolors only; run --family sd15/sdxl without --full (tiny checkpoints)")
    if not args.full and args.family == "kolors":
        from graphgen.testing.tiny_kolors import write_tiny_models

        models = str(write_tiny_models(work / "tiny").diffusers_root)
    setup_s = time.perf_counter() - t0
    base = {
        "family": args.family,
        "image_size": image_size,
        "models": models,
        "tiny_configs": not full,
        "device": device,
        "dataset": str(dataset),
        "size": size,
        "steps": steps,
        "rank": rank,
        "alpha": args.alpha,
        "lr": args.lr,
        "gc": gc,
        "precision": precision,
        "seed": args.seed,
        "threads": args.threads or (None if full else 1),
    }
    what = (
        "full-size random-weight Kolors on " + torch.cuda.get_device_name()
        if full
        else "DRY RUN of --full (no CUDA): tiny configs, random weights, CPU"
        if dry
        else "tiny Kolors (graphgen.testing.tiny_kolors), CPU"
        if args.family == "kolors"
        else f"tiny {args.family} (graphgen.testing.tiny_sd), CPU"
    )
    load_before = os.getloadavg()
    print(
        f"{what}; {size}x{size}, rank {rank}, alpha {args.alpha:g}, lr {args.lr:g}, batch 1, precision {precision}, "
        f"gradient checkpointing {'on' if gc else 'off'}; {steps} steps per run, {rounds} round(s), "
        f"{args.images} images ({image_size}x{image_size}, resized, centre crop)"
    )
    print(
        f"torch {torch.__version__}, {base['threads'] or torch.get_num_threads()} torch threads per child, "
        f"{os.cpu_count()} CPUs, "
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
        f"dataset + models written in {setup_s:.1f}s",
        flush=True,
    )

    # cache for (a), built beforehand in its own process
    prep_dir = work / "cache_prepared"
    prep = run_child(
        {**base, "variant": "prep", "cache_dir": str(prep_dir), "out_dir": str(work / "out_prep")}, work
    )
    print(
        f"cache built beforehand: {prep['cache_s']:.2f}s ({prep['images_encoded']} VAE batches, "
        f"{prep['captions_encoded']} captions), peak GPU GiB alloc/reserved {fmt_gpu(prep['cache_gpu'])}",
        flush=True,
    )

    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    order = list(VARIANTS)
    for r in range(rounds):
        for v in order[r % 3 :] + order[: r % 3]:
            out_dir = work / f"out_{v}_{r}"
            cache = prep_dir if v == "a" else work / f"cache_{v}_{r}"  # (b) starts from an empty cache
            res = run_child({**base, "variant": v, "cache_dir": str(cache), "out_dir": str(out_dir)}, work)
            results[v].append(res)
            run, steady = rates(res, steps, warmup)
            print(
                f"  round {r + 1} {v}: {run:.2f} steps/s run, {steady:.2f} steady, cache {res['cache_s']:.2f}s, "
                f"peak RSS {res['peak_rss_mib']:.0f} MiB",
                flush=True,
            )

    med = statistics.median
    rows = {}
    for v, runs in results.items():
        rr = [rates(x, steps, warmup) for x in runs]
        rows[v] = {
            "run": med(r[0] for r in rr),
            "steady": med(r[1] for r in rr),
            "cpu": med(cpu_rate(x, steps, warmup) for x in runs),
            "cache": med(x["cache_s"] for x in runs),
            "train": med(x["train_s"] for x in runs),
            "load": med(x["load_s"] for x in runs),
            "rss": med(x["peak_rss_mib"] for x in runs),
            "rss_range": (min(x["peak_rss_mib"] for x in runs), max(x["peak_rss_mib"] for x in runs)),
            "rss0": med(x["rss_after_imports_mib"] for x in runs),
            "gpu": runs[-1]["train_gpu"],
            "loss": runs[-1]["losses"][-1],
            "loss_tail": statistics.fmean(runs[-1]["losses"][-10:]),
        }
    print()
    print(
        f"{'variant':50s} {'steps/s':>8s} {'steps/s':>8s} {'cache':>7s} {'train':>7s} {'load':>6s} "
        f"{'peak RSS':>9s} {'RSS after':>9s} {'loss':>8s} {'mean loss':>9s}"
    )
    print(
        f"{'':50s} {'run':>8s} {'steady':>8s} {'s':>7s} {'s':>7s} {'s':>6s} {'MiB':>9s} {'imports':>9s} "
        f"{'step ' + str(steps):>8s} {'last<=10':>9s}"
    )
    for v, row in rows.items():
        print(
            f"{VARIANTS[v]:50s} {row['run']:8.2f} {row['steady']:8.2f} {row['cache']:7.2f} {row['train']:7.2f} "
            f"{row['load']:6.2f} {row['rss']:9.0f} {row['rss0']:9.0f} {row['loss']:8.4f} {row['loss_tail']:9.4f}"
        )
    a, b, c = rows["a"], rows["b"], rows["c"]
    print(f"ratios, steps/s run:    a/c = {a['run'] / c['run']:.2f}   b/c = {b['run'] / c['run']:.2f}")
    print(
        f"ratios, steps/s steady: a/c = {a['steady'] / c['steady']:.2f}   b/c = {b['steady'] / c['steady']:.2f}"
    )
    print(
        f"ratios, steps per CPU-second steady (each child's own CPU time, one thread: robust to other load): "
        f"a/c = {a['cpu'] / c['cpu']:.2f}   b/c = {b['cpu'] / c['cpu']:.2f}   "
        f"(a {a['cpu']:.2f}, b {b['cpu']:.2f}, c {c['cpu']:.2f})"
    )
    print(
        f"ratios, peak RSS:       a/c = {a['rss'] / c['rss']:.2f}   b/c = {b['rss'] / c['rss']:.2f}   "
        f"(ranges MiB: a {a['rss_range'][0]:.0f}-{a['rss_range'][1]:.0f}, b {b['rss_range'][0]:.0f}-"
        f"{b['rss_range'][1]:.0f}, c {c['rss_range'][0]:.0f}-{c['rss_range'][1]:.0f})"
    )
    print(
        f"cache build: {prep['cache_s']:.2f}s beforehand for (a); median {b['cache']:.2f}s inside (b); "
        f"(c) spends a median {med(x['encode_ms_per_step'] for x in results['c']):.1f} ms per step loading and "
        f"encoding (VAE + text encoder) of its {1000 / c['steady']:.1f} ms"
    )
    if full or dry:
        for v, row in rows.items():
            print(
                f"peak GPU memory while training, GiB allocated / reserved, {VARIANTS[v]}: {fmt_gpu(row['gpu'])}"
            )
        cache_gpu = results["b"][-1]["cache_gpu"]
        print(
            f"peak GPU memory while (b) built its cache (text encoder, then VAE, alone on the GPU): {fmt_gpu(cache_gpu)}"
        )
        if full:
            fits = a["gpu"]["reserved_gib"] + 0.5 < 15.5
            print(
                f"16 GB target for graphgen's training (reserved + ~0.5 GiB CUDA context < ~15.5 GiB usable): "
                f"{'met' if fits else 'NOT met'} ({a['gpu']['reserved_gib']:.2f} GiB reserved)"
            )
    bad = sum(x.get("nonfinite_latents", 0) for x in results["c"])
    if bad:
        print(f"WARNING: the reference's VAE gave non-finite latents in {bad} steps (fp16 overflow)")
    for v in VARIANTS:
        firsts = med(x["step_stamps"][0] for x in results[v])
        after = med(x["train_s"] - x["step_stamps"][-1] for x in results[v])
        print(
            f"  {VARIANTS[v]}: {firsts:.2f}s to the end of step 1 (setup + first step), "
            f"{after:.2f}s after the last step (saving the LoRA{', loss PNG' if v != 'c' else ''})"
        )
    # loss sanity: the same draws and init, so the curves should coincide
    la, lb, lc = (results[v][-1]["losses"] for v in "abc")
    print(
        f"loss sanity (last round): a == b bit for bit: {la == lb}; max |a-b| {max(abs(x - y) for x, y in zip(la, lb, strict=True)):.2e}; "
        f"max |a-c| {max(abs(x - y) for x, y in zip(la, lc, strict=True)):.2e} over {steps} steps "
        f"(losses range {min(la):.3f}..{max(la):.3f})"
    )
    print(compare_loras({v: results[v][-1]["lora_file"] for v in VARIANTS}))
    if dry:
        print(
            "DRY RUN: tiny configs on the CPU, a few steps; the code path is exercised, the numbers mean nothing"
        )
    warns = sorted({w for runs in results.values() for x in runs for w in x.get("warnings", [])})
    for w in warns:
        print(f"graphgen warning: {w}")
    load_after = os.getloadavg()
    print(
        f"load average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
        f"total {time.perf_counter() - t0:.0f}s"
    )


if __name__ == "__main__":
    main()
