"""The GPU suite: graphgen and diffusers side by side on one card, in one run (< 8 minutes).

    python benchmarks/gpu_suite.py                 # on a CUDA machine: full-size random weights
    python benchmarks/gpu_suite.py --dry-run       # CPU, tiny configs, seconds (tests/test_gpu_suite.py)

Full-size Kolors with random weights from the real configs (UNet 2.6 B, ChatGLM3-6B, SDXL VAE,
fp16), built on the GPU by `kolors_inference.build_full_models` (no download). Sections:

1. inference: a whole prompt-to-image run (encode, 20 steps at 1024², cfg 5, decode) by graphgen
   (`offload=auto`, the default: everything fits, so nothing moves) vs `KolorsPipeline` over the
   very same modules, alternated rounds: seconds, sampling it/s (per-step timestamps of both),
   peak GPU memory, and how many transfers graphgen made (goal: ratio <= 1.02, it/s >= 1.0x);
2. budget: graphgen again under a 10 GB VRAM budget (the 12 GB-card case: ChatGLM3 streamed, the
   UNet and VAE moved out for it and back, from pinned host copies): seconds, it/s, peak
   (goal <= 8 GiB) and the transfers' GB/s;
3. cold start: the models written once as a diffusers folder, then time to first image for
   graphgen (`KolorsModelLoader`: safetensors straight to the GPU) vs
   `KolorsPipeline.from_pretrained(...).to("cuda")` + the same call (files in the page cache for both);
4. lora: `benchmarks/lora_train.py --full` (graphgen's trainer vs a plain diffusers+peft loop,
   gradient checkpointing on), its summary lines kept;
5. sdxl: full-size random-weight SDXL base (UNet 2.6 B, CLIP ViT-L + OpenCLIP bigG, SDXL VAE, the
   released configs of `graphgen.testing.tiny_sd`) written once as a single-file checkpoint in the
   original SGM key layout (`sd_inference.write_checkpoints`, timed apart: build + write, then the
   `CheckpointLoaderSimple` load from the page cache), then graphgen's default SDXL graph
   (`sd_inference.graph`: CheckpointLoaderSimple, CLIPTextEncode x2, KSampler euler/normal, VAEDecode)
   vs `StableDiffusionXLPipeline` over the very modules the loader made (`sd_inference.pipeline_for`),
   1024², 20 steps, cfg 7, alternated rounds: seconds, sampling it/s, peak GPU memory (skipped with
   a line when the SD nodes are missing);
6. speedups (only with `--speedups`: it does not fit the 8 minutes with the rest, run it as
   `--speedups --skip cold --skip budget --skip lora`): graphgen's it/s and whole run with fp16
   (baseline), bf16, channels_last, and channels_last + `compile` (its first run, the warm-up
   cost, reported apart; skipped in the dry run: inductor's CPU build takes minutes).

Figures go to `benchmarks/results/gpu_suite_<card>.json` and `.log` (`--results-dir` to change).
`--dry-run` runs the same code on the CPU with the tiny configs (no memory figures; the numbers
mean nothing, the code paths are exercised).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks, reused below

import kolors_inference as ki  # noqa: E402
import torch  # noqa: E402

from graphgen import Engine, WorkflowBuilder, default_registry  # noqa: E402

GIB = 2**30
SECTIONS = ("inference", "budget", "cold", "lora", "sdxl", "speedups")


class Card:
    """The device under test, and its memory probes (zeros on the CPU)."""

    def __init__(self, dry: bool) -> None:
        self.dry = dry
        self.device = torch.device("cpu" if dry else "cuda")
        self.dtype = torch.float32 if dry else torch.float16
        self.name = "CPU (dry run)" if dry else torch.cuda.get_device_name()

    def sync(self) -> None:
        if not self.dry:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if not self.dry:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        return 0.0 if self.dry else torch.cuda.max_memory_allocated() / GIB

    def release(self) -> None:
        gc.collect()
        if not self.dry:
            torch.cuda.empty_cache()


class Report:
    """Prints each line and keeps it, with the figures, for the results files."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.figures: dict[str, Any] = {}

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def its_from(stamps: list[float]) -> float:
    """Steps per second between the first and the last step's end (the same measure for both)."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else 0.0


# -- graphgen and the pipeline over the same modules --------------------------------------------

def graph(size: int, steps: int, seed: int, loader: str = "FullModels", **loader_inputs: Any) -> Any:
    b = WorkflowBuilder()
    models = b.add(loader, id="models", **loader_inputs)
    embeds = b.add("KolorsTextEncode", id="encode", chatglm3_model=models["chatglm3_model"], prompt=ki.PROMPT,
                   negative_prompt=ki.NEGATIVE)
    latent = b.add("EmptyLatentImage", id="latent", width=size, height=size)
    sampled = b.add("KolorsKSampler", id="sample", model=models["model"], kolors_embeds=embeds, latent=latent,
                    seed=seed, steps=steps, cfg=5.0, scheduler="euler")
    decoded = b.add("VAEDecode", id="decode", samples=sampled, vae=models["vae"], tiled="auto")
    b.add("PreviewImage", images=decoded)  # validation wants an output node; runs target "decode" only
    return b.build()


KOLORS_FORCED = ("encode", "latent", "sample", "decode")  # every node of `graph` but the loader
SDXL_FORCED = ("pos", "neg", "latent", "sample", "decode")  # the same for `sd_inference.graph`
SDXL_CFG = 7.0


def run_graph(engine: Engine, card: Card, workflow: Any, force: tuple[str, ...] = KOLORS_FORCED) -> dict[str, Any]:
    """One timed run up to node ``decode``, its per-step stamps taken from node ``sample``'s progress."""
    stamps: list[float] = []

    def on_event(event: Any) -> None:
        if event.kind == "node_progress" and event.node_id == "sample":
            card.sync()
            stamps.append(time.perf_counter())

    card.reset_peak()
    start = time.perf_counter()
    result = engine.run(workflow, outputs=["decode"], force=list(force), on_event=on_event)
    card.sync()
    seconds = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"graphgen run failed: {result.failed}")
    return {"seconds": seconds, "its": its_from(stamps), "peak_gib": card.peak_gib(),
            "image": result.output("decode", "image").float().cpu().numpy(), "timings": result.timings}


def run_pipeline(pipe: Any, card: Card, size: int, steps: int, seed: int, prompt: str = ki.PROMPT,
                 negative: str = ki.NEGATIVE, cfg: float = 5.0) -> dict[str, Any]:
    stamps: list[float] = []

    def on_step(_pipe: Any, _i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        card.sync()
        stamps.append(time.perf_counter())
        return kwargs

    card.reset_peak()
    start = time.perf_counter()
    images = pipe(prompt=prompt, negative_prompt=negative, height=size, width=size, num_inference_steps=steps,
                  guidance_scale=cfg, generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
                  callback_on_step_end=on_step).images
    card.sync()
    return {"seconds": time.perf_counter() - start, "its": its_from(stamps), "peak_gib": card.peak_gib(),
            "image": images}


def engine_with(node: Any, work: Path, **options: Any) -> Engine:
    registry = default_registry(entry_points=False, env=False)
    registry.register(node, pack="bench")
    return Engine(registry=registry, output_dir=work / "out", **options)


def alternated(rounds: int, first_seed: int, ours: Any, theirs: Any) -> tuple[list[Any], list[Any]]:
    """``ours(seed)`` and ``theirs(seed)`` once per round, which goes first alternating (no order bias)."""
    mine: list[Any] = []
    other: list[Any] = []
    for round_ in range(rounds):
        pair = [lambda s=first_seed + round_: mine.append(ours(s)),
                lambda s=first_seed + round_: other.append(theirs(s))]
        for run in pair if round_ % 2 == 0 else reversed(pair):
            run()
    return mine, other


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {"seconds": median([r["seconds"] for r in runs]), "its": median([r["its"] for r in runs]),
            "peak_gib": max(r["peak_gib"] for r in runs)}


# -- sections -------------------------------------------------------------------------------------

def section_inference(args: argparse.Namespace, card: Card, work: Path, report: Report, models: Any) -> None:
    from diffusers import KolorsPipeline

    from graphgen_nodes.diffusion.schedulers import make_scheduler

    unet, vae, text, tokenizer = models
    engine = engine_with(ki.full_models_node(unet, vae, text, tokenizer, card.dtype, card.device), work)
    run_graph(engine, card, graph(args.size, 2, 0))  # warm-up (first use moves the encoder in)
    moves_before = engine.models.memory.stats.moves
    pipe = KolorsPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                          scheduler=make_scheduler("euler"), force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)
    run_pipeline(pipe, card, args.size, 2, 0)  # warm-up
    ours, theirs = alternated(args.rounds, 100, lambda s: run_graph(engine, card, graph(args.size, args.steps, s)),
                              lambda s: run_pipeline(pipe, card, args.size, args.steps, s))
    g, p = summarize(ours), summarize(theirs)
    diff = float(abs(ours[0]["image"] - theirs[0]["image"]).max())
    moves = engine.models.memory.stats.moves - moves_before
    report.figures["inference"] = {"graphgen": g, "pipeline": p, "ratio_seconds": g["seconds"] / p["seconds"],
                                   "ratio_its": g["its"] / p["its"] if p["its"] else 0.0,
                                   "max_abs_pixel_diff": diff, "graphgen_transfers": moves}
    report.say(f"[inference] {args.size}x{args.size}, {args.steps} steps, cfg 5, {args.rounds} alternated rounds")
    report.say(f"  graphgen (offload=auto)  {g['seconds']:7.2f} s  {g['its']:6.2f} it/s  peak {g['peak_gib']:6.2f} GiB"
               f"  transfers during the timed runs: {moves}")
    report.say(f"  KolorsPipeline           {p['seconds']:7.2f} s  {p['its']:6.2f} it/s  peak {p['peak_gib']:6.2f} GiB")
    fig = report.figures["inference"]
    report.say(f"  ratio whole run {fig['ratio_seconds']:.3f} (goal <= 1.02), it/s {fig['ratio_its']:.3f} (goal >= 1.0);"
               f" max |pixel difference| {diff:.4f} (0..1 scale)")
    engine.free_resources()


def section_budget(args: argparse.Namespace, card: Card, work: Path, report: Report, models: Any) -> None:
    unet, vae, text, tokenizer = models
    text.to("cpu")  # as after loading on a small card: the encoder cannot sit whole on it
    card.release()
    budget = int(args.budget_gb * GIB)
    engine = engine_with(ki.full_models_node(unet, vae, text, tokenizer, card.dtype, card.device), work,
                         vram_bytes=budget)
    first = run_graph(engine, card, graph(args.size, args.steps, 0))  # pins the host copies once
    stats = engine.models.memory.stats
    moved_before, seconds_before = stats.to_device_bytes + stats.to_host_bytes, stats.seconds
    runs = [run_graph(engine, card, graph(args.size, args.steps, 200 + r)) for r in range(args.rounds)]
    moved = stats.to_device_bytes + stats.to_host_bytes - moved_before
    spent = stats.seconds - seconds_before
    s = summarize(runs)
    gbps = moved / spent / 1e9 if spent > 0 else 0.0
    report.figures["budget"] = {"budget_gb": args.budget_gb, "first_run_seconds": first["seconds"], **s,
                                "peak_gib": max(s["peak_gib"], first["peak_gib"]),
                                "bytes_moved_per_run": moved / max(1, len(runs)), "transfer_gbps": gbps,
                                "device_peak_model_gib": engine.models.memory.peak_bytes / GIB}
    fig = report.figures["budget"]
    report.say(f"[budget] graphgen with a {args.budget_gb:g} GB VRAM budget (ChatGLM3 streamed)")
    report.say(f"  first run {first['seconds']:.2f} s (pins host copies once); then {s['seconds']:.2f} s, "
               f"{s['its']:.2f} it/s, peak {fig['peak_gib']:.2f} GiB (goal <= 8 GiB)")
    report.say(f"  moved {fig['bytes_moved_per_run'] / 1e9:.2f} GB per run at {gbps:.1f} GB/s "
               f"(model bytes on the card at most {fig['device_peak_model_gib']:.2f} GiB)")
    engine.free_resources()
    card.release()


def section_speedups(args: argparse.Namespace, card: Card, work: Path, report: Report, models: Any) -> None:
    from graphgen.models.speedups import apply_speedups

    unet, vae, text, tokenizer = models
    text.to(card.device)
    rows: dict[str, dict[str, float]] = {}

    def measure(label: str, dtype: torch.dtype, warmups: int = 1) -> None:
        engine = engine_with(ki.full_models_node(unet, vae, text, tokenizer, dtype, card.device), work)
        first = [run_graph(engine, card, graph(args.size, args.steps, 0))["seconds"] for _ in range(warmups)]
        rows[label] = {**summarize([run_graph(engine, card, graph(args.size, args.steps, 300 + r))
                                    for r in range(args.rounds)]), "first_run_seconds": first[0]}
        engine.free_resources()

    measure("fp16 (baseline)" if not card.dry else "fp32 (baseline)", card.dtype)
    for module in (unet, vae, text):
        module.to(torch.bfloat16)
    measure("bf16", torch.bfloat16)
    for module in (unet, vae, text):
        module.to(card.dtype)
    apply_speedups(unet, channels_last=True)
    measure("channels_last", card.dtype)
    if card.dry:
        report.say("  (compile skipped in the dry run: inductor's CPU build takes minutes)")
    else:
        apply_speedups(unet, compile=True)
        measure("channels_last + compile", card.dtype)
    base = next(iter(rows.values()))
    report.figures["speedups"] = rows
    report.say(f"[speedups] graphgen, {args.size}x{args.size}, {args.steps} steps (first run = warm-up cost)")
    for label, row in rows.items():
        report.say(f"  {label:26s} {row['seconds']:7.2f} s  {row['its']:6.2f} it/s ({row['its'] / base['its']:.2f}x)"
                   f"  first run {row['first_run_seconds']:.1f} s  peak {row['peak_gib']:.2f} GiB")


def write_folder(models: Any, folder: Path) -> None:
    """The models as a diffusers Kolors folder (fp16 safetensors on a GPU), what both cold starts read."""
    from diffusers import KolorsPipeline

    from graphgen_nodes.diffusion.schedulers import make_scheduler

    unet, vae, text, tokenizer = models
    pipe = KolorsPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                          scheduler=make_scheduler("euler"), force_zeros_for_empty_prompt=False)
    pipe.save_pretrained(folder)


def section_cold(args: argparse.Namespace, card: Card, work: Path, report: Report, folder: Path) -> None:
    from diffusers import KolorsPipeline

    card.release()
    registry = default_registry(entry_points=False, env=False)
    engine = Engine(registry=registry, output_dir=work / "out")
    precision = "fp32" if card.dry else "fp16"
    start = time.perf_counter()
    ours = run_graph(engine, card, graph(args.size, args.steps, 0, loader="KolorsModelLoader", path=str(folder),
                                         precision=precision, device=card.device.type))
    ours_total = time.perf_counter() - start
    load_s = ours["timings"].get("models", 0.0)
    engine.free_resources()
    del engine
    card.release()
    start = time.perf_counter()
    pipe = KolorsPipeline.from_pretrained(folder, dtype=card.dtype).to(card.device)
    card.sync()
    pipe_load = time.perf_counter() - start
    pipe.set_progress_bar_config(disable=True)
    run_pipeline(pipe, card, args.size, args.steps, 0)
    theirs_total = time.perf_counter() - start
    del pipe
    card.release()
    report.figures["cold"] = {"graphgen_first_image_s": ours_total, "graphgen_load_s": load_s,
                              "pipeline_first_image_s": theirs_total, "pipeline_load_s": pipe_load,
                              "ratio": ours_total / theirs_total}
    report.say("[cold start] time to first image from a diffusers folder (files in the page cache for both)")
    report.say(f"  graphgen KolorsModelLoader + run     {ours_total:7.2f} s (loading {load_s:.2f} s)")
    report.say(f"  KolorsPipeline.from_pretrained().to() {theirs_total:7.2f} s (loading {pipe_load:.2f} s)")
    report.say(f"  ratio {ours_total / theirs_total:.3f}")


def section_lora(args: argparse.Namespace, report: Report) -> None:
    script = Path(__file__).resolve().parent / "lora_train.py"
    command = [sys.executable, str(script), "--full", "--steps", str(args.lora_steps), "--rounds", "1"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=args.lora_timeout)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0:
        report.say(f"[lora] lora_train.py failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-500:]}")
        report.figures["lora"] = {"failed": proc.returncode}
        return
    keep = [ln for ln in lines if ln.startswith(("ratios", "peak GPU memory", "loss sanity", "16 GB", "full-size",
                                                  "DRY RUN", "(a)", "(b)", "(c)"))]
    steady = re.search(r"steps/s steady: a/c = ([0-9.]+)", proc.stdout)
    report.figures["lora"] = {"steady_ratio_a_over_c": float(steady.group(1)) if steady else None,
                              "seconds": time.perf_counter() - start, "summary": keep}
    report.say(f"[lora] benchmarks/lora_train.py --full --steps {args.lora_steps} (goal: graphgen >= 1.5x the "
               f"diffusers+peft loop, peak <= 12 GB, gradient checkpointing on)")
    for line in keep:
        report.say("  " + line)


def section_sdxl(args: argparse.Namespace, card: Card, work: Path, report: Report) -> None:
    """SDXL base: graphgen's default graph vs `StableDiffusionXLPipeline` on the modules its loader made."""
    import sd_inference as sdi

    registry = default_registry(entry_points=False, env=False)
    missing = [name for name in ("CheckpointLoaderSimple", "CLIPTextEncode", "KSampler") if name not in registry]
    if missing:
        report.say(f"[sdxl] skipped: no SDXL family in this checkout (missing nodes: {', '.join(missing)})")
        report.figures["sdxl"] = {"skipped": f"missing nodes {missing}"}
        return
    card.release()
    models_dir, ckpt = work / "sdxl-models", sdi.NAMES["sdxl"]
    # The SD pack loads from files only: write the checkpoint once as a user holds it (random
    # weights, released configs on the GPU, fp16 file; tiny configs in the dry run)...
    start = time.perf_counter()
    sdi.write_checkpoints(models_dir, ["sdxl"], full=not card.dry)
    card.sync()
    write_s = time.perf_counter() - start
    file_gb = (models_dir / "checkpoints" / ckpt).stat().st_size / 1e9
    card.release()
    engine = Engine(registry=registry, output_dir=work / "out", models_dir=models_dir)
    # ...and load it once through CheckpointLoaderSimple (file in the page cache); the pipeline is
    # built on the very modules the loader holds, so both sides run the same weights.
    card.reset_peak()
    start = time.perf_counter()
    pipe = sdi.pipeline_for(engine, "sdxl", ckpt)
    card.sync()
    load_s = time.perf_counter() - start
    loaded_gib = card.peak_gib()
    params = {name: sum(p.numel() for p in module.parameters()) / 1e9
              for name, module in (("unet", pipe.unet), ("clip_l", pipe.text_encoder),
                                   ("clip_g", pipe.text_encoder_2), ("vae", pipe.vae))}

    def ours(seed: int, steps: int = args.steps) -> dict[str, Any]:
        return run_graph(engine, card, sdi.graph(ckpt, args.size, steps, seed, cfg=SDXL_CFG), force=SDXL_FORCED)

    def theirs(seed: int, steps: int = args.steps) -> dict[str, Any]:
        return run_pipeline(pipe, card, args.size, steps, seed, prompt=sdi.PROMPT, negative=sdi.NEGATIVE,
                            cfg=SDXL_CFG)

    ours(0, 2)  # warm-ups (kernels, allocator)
    theirs(0, 2)
    moves_before = engine.models.memory.stats.moves
    mine, other = alternated(args.rounds, 400, ours, theirs)
    g, p = summarize(mine), summarize(other)
    diff = float(abs(mine[0]["image"] - other[0]["image"]).max())
    report.figures["sdxl"] = {
        "size": args.size, "steps": args.steps, "cfg": SDXL_CFG, "sampler": "euler/normal", "params_b": params,
        "checkpoint_gb": file_gb, "build_and_write_s": write_s, "load_s": load_s, "loaded_peak_gib": loaded_gib,
        "graphgen": g, "pipeline": p, "ratio_seconds": g["seconds"] / p["seconds"],
        "ratio_its": g["its"] / p["its"] if p["its"] else 0.0, "max_abs_pixel_diff": diff,
        "graphgen_transfers": engine.models.memory.stats.moves - moves_before}
    fig = report.figures["sdxl"]
    report.say(f"[sdxl] {'tiny' if card.dry else 'full-size'} random-weight SDXL base (UNet {params['unet']:.2f} B, "
               f"CLIP-L {params['clip_l']:.2f} B, bigG {params['clip_g']:.2f} B, VAE {params['vae']:.3f} B params), "
               f"{args.size}x{args.size}, {args.steps} steps, cfg {SDXL_CFG:g}, euler/normal, "
               f"{args.rounds} alternated rounds")
    report.say(f"  single-file checkpoint (SGM layout) {file_gb:.2f} GB: build + write {write_s:.1f} s, "
               f"CheckpointLoaderSimple {load_s:.1f} s (page cache; peak {loaded_gib:.2f} GiB) - not in the runs below")
    report.say(f"  graphgen default graph     {g['seconds']:7.2f} s  {g['its']:6.2f} it/s  peak {g['peak_gib']:6.2f} GiB"
               f"  transfers during the timed runs: {fig['graphgen_transfers']}")
    report.say(f"  StableDiffusionXLPipeline  {p['seconds']:7.2f} s  {p['its']:6.2f} it/s  peak {p['peak_gib']:6.2f} GiB")
    report.say(f"  ratio whole run {fig['ratio_seconds']:.3f} (goal <= 1.02), it/s {fig['ratio_its']:.3f} (goal >= 1.0);"
               f" max |pixel difference| {diff:.4f} (0..1 scale)")
    engine.free_resources()


# -- main -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny configs, a few steps (seconds)")
    parser.add_argument("--size", type=int, default=None, help="image side (default 1024; dry run 64)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 20; dry run 2)")
    parser.add_argument("--rounds", type=int, default=None, help="alternated timed rounds (default 3; dry run 1)")
    parser.add_argument("--budget-gb", type=float, default=10.0, help="VRAM budget of the small-card case")
    parser.add_argument("--lora-steps", type=int, default=8)
    parser.add_argument("--lora-timeout", type=int, default=240, help="seconds allowed to the LoRA section")
    parser.add_argument("--skip", action="append", default=[], choices=SECTIONS, help="leave a section out")
    parser.add_argument("--speedups", action="store_true", help="also measure bf16, channels_last and compile")
    parser.add_argument("--results-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --dry-run (CPU, tiny configs)")
    card = Card(dry=args.dry_run)
    args.size = args.size or (64 if card.dry else 1024)
    args.steps = args.steps or (2 if card.dry else 20)
    args.rounds = args.rounds or (1 if card.dry else 3)
    report = Report()
    started = time.perf_counter()
    report.say(f"graphgen GPU suite on {card.name}; torch {torch.__version__}"
               + (" - DRY RUN: tiny configs on the CPU, the numbers mean nothing" if card.dry else ""))
    with tempfile.TemporaryDirectory(prefix="graphgen-gpu-suite-") as tmp:
        work = Path(tmp)
        models = ki.build_full_models(card.device, tiny=card.dry)
        if "inference" not in args.skip:
            section_inference(args, card, work, report, models)
        folder = work / "kolors-diffusers"
        if "cold" not in args.skip:
            write_folder(models, folder)  # before the budget run attaches streaming hooks to the encoder
        if args.speedups and "speedups" not in args.skip:
            section_speedups(args, card, work, report, models)  # before the budget run's streaming hooks
        if "budget" not in args.skip:
            section_budget(args, card, work, report, models)
        del models
        card.release()
        if "cold" not in args.skip:
            section_cold(args, card, work, report, folder)
    if "lora" not in args.skip:
        section_lora(args, report)
    if "sdxl" not in args.skip:
        with tempfile.TemporaryDirectory(prefix="graphgen-gpu-suite-sdxl-") as tmp:
            section_sdxl(args, card, Path(tmp), report)
        card.release()  # the section's engine and pipeline are gone with its frame
    report.figures["seconds"] = time.perf_counter() - started
    report.say(f"suite finished in {report.figures['seconds']:.0f} s (goal < 480 s on an H100/H200)")
    tag = "dryrun" if card.dry else re.sub(r"[^a-z0-9]+", "_", card.name.lower()).strip("_")
    tag += "_speedups" if args.speedups else ""  # a separate run: never replaces the main figures
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"gpu_suite_{tag}.json").write_text(
        json.dumps({"device": card.name, **report.figures}, indent=2, default=float) + "\n", encoding="utf-8")
    (args.results_dir / f"gpu_suite_{tag}.log").write_text("\n".join(report.lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
