"""graphgen's SD1.5 / SDXL graph (CheckpointLoaderSimple → CLIPTextEncode ×2 → KSampler → VAEDecode) vs
diffusers' StableDiffusionPipeline / StableDiffusionXLPipeline on the same modules, side by side.

    python benchmarks/sd_inference.py                  # tiny checkpoints, CPU: time ratio (target <= 1.02)
    python benchmarks/sd_inference.py --full           # released sizes, random weights, GPU: it/s, peak memory

Both sides run the same work per round: text encoding, sampling (Euler, "normal" = linspace
spacing, cfg 8) and VAE decoding; the graph re-runs every node but the loader (forced), the
pipeline is called on the very modules the loader produced. Rounds alternate; medians are
reported. `--full` writes full-size random-weight single-file checkpoints (original key layout)
to a temporary folder first, so the graph loads them as a user's download.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from graphgen import Engine  # noqa: E402

PROMPT = "a photo of a cat sitting on a wooden table, high quality"
NEGATIVE = "text, watermark, blurry"
NAMES = {"sd15": "v1-5-pruned-emaonly.safetensors", "sdxl": "sd_xl_base_1.0.safetensors"}


def graph(ckpt: str, size: int, steps: int, seed: int, cfg: float = 8.0) -> dict[str, Any]:
    """The default text-to-image graph; its sampler is node ``sample``, its image ``decode``."""
    return {
        "load": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["load", 1], "text": PROMPT}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["load", 1], "text": NEGATIVE}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["load", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["load", 2]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}},
    }


def pipeline_for(engine: Engine, family: str, ckpt: str) -> Any:
    """diffusers' pipeline on the modules graphgen's loader holds (no second copy)."""
    import diffusers

    from graphgen_nodes.diffusion.clip_tokenizer import clip_tokenizer
    from graphgen_nodes.diffusion.comfy_samplers import make_comfy_scheduler

    result = engine.run(graph(ckpt, 64, 1, 0), outputs=["load"])
    model, clip, vae = (result.output("load", i) for i in range(3))
    scheduler = make_comfy_scheduler("euler", "normal")
    if family == "sd15":
        pipe = diffusers.StableDiffusionPipeline(
            vae=vae.model, text_encoder=clip.clip_l.model, tokenizer=clip_tokenizer(), unet=model.handle.model,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=vae.model, text_encoder=clip.clip_l.model, text_encoder_2=clip.clip_g.model,
            tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(pad_token="!"), unet=model.handle.model,
            scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_pipeline(pipe: Any, size: int, steps: int, seed: int) -> Any:
    return pipe(PROMPT, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=steps,
                guidance_scale=8.0, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def compare(engine: Engine, family: str, size: int, steps: int, rounds: int) -> dict[str, float]:
    ckpt = NAMES[family]
    pipe = pipeline_for(engine, family, ckpt)
    run_pipeline(pipe, size, steps, 0)  # warm-up both
    engine.run(graph(ckpt, size, steps, 0), outputs=["decode"])
    ours, theirs, peaks = [], [], {"graphgen": 0.0, "pipeline": 0.0}
    forced = ["pos", "neg", "latent", "sample", "decode"]
    for round_ in range(rounds):
        seed = 1000 + round_
        for which in ("graphgen", "pipeline"):
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            if which == "graphgen":
                engine.run(graph(ckpt, size, steps, seed), outputs=["decode"], force=forced)
            else:
                run_pipeline(pipe, size, steps, seed)
            sync()
            (ours if which == "graphgen" else theirs).append(time.perf_counter() - t0)
            if torch.cuda.is_available():
                peaks[which] = max(peaks[which], torch.cuda.max_memory_allocated() / 2**30)
    return {"graphgen_s": statistics.median(ours), "pipeline_s": statistics.median(theirs),
            "ratio": statistics.median(ours) / statistics.median(theirs),
            "graphgen_peak_gib": peaks["graphgen"], "pipeline_peak_gib": peaks["pipeline"]}


def write_checkpoints(models: Path, families: list[str], full: bool) -> None:
    from safetensors.torch import save_file

    from graphgen.testing.tiny_sd import build_tiny_sd, checkpoint_state_dict

    (models / "checkpoints").mkdir(parents=True, exist_ok=True)
    for family in families:
        device = torch.device("cuda" if full else "cpu")
        with device:
            tiny = build_tiny_sd(family, full=full)  # type: ignore[arg-type]
        state = checkpoint_state_dict(tiny)
        if full:
            state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in state.items()}
        save_file(state, str(models / "checkpoints" / NAMES[family]))
        del tiny, state
        if full:
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="released sizes, random weights, on a GPU")
    parser.add_argument("--families", default="sd15,sdxl")
    parser.add_argument("--size", type=int, default=None, help="default: 64 (tiny), 512 / 1024 (full)")
    parser.add_argument("--steps", type=int, default=None, help="default: 4 (tiny), 20 (full)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    families = args.families.split(",")
    if args.full and not torch.cuda.is_available():
        raise SystemExit("--full needs a CUDA GPU")
    root = Path(tempfile.mkdtemp(prefix="graphgen-sd-bench-"))
    write_checkpoints(root / "models", families, args.full)
    engine = Engine(output_dir=root / "out", models_dir=root / "models")
    device = torch.cuda.get_device_name() if args.full else "CPU"
    for family in families:
        size = args.size or (64 if not args.full else 512 if family == "sd15" else 1024)
        steps = args.steps or (20 if args.full else 4)
        r = compare(engine, family, size, steps, args.rounds)
        kind = "full-size random weights" if args.full else "tiny"
        print(f"{family} {kind}, {size}x{size}, {steps} steps, cfg 8, euler/normal, {device}, "
              f"{args.rounds} alternated rounds")
        print(f"  graphgen graph       {r['graphgen_s'] * 1000:9.1f} ms (median) {steps / r['graphgen_s']:7.2f} steps/s (whole run)")
        print(f"  diffusers pipeline   {r['pipeline_s'] * 1000:9.1f} ms (median) {steps / r['pipeline_s']:7.2f} steps/s (whole run)")
        print(f"  time ratio graphgen / pipeline: {r['ratio']:.3f}  (target <= 1.02)")
        if args.full:
            print(f"  peak GPU memory: graphgen {r['graphgen_peak_gib']:.2f} GiB, "
                  f"pipeline {r['pipeline_peak_gib']:.2f} GiB")
        engine.free_resources()


if __name__ == "__main__":
    main()
