"""The `graphgen` command (installed from here; the root cli.py forwards to it): parses arguments and
renders events; the work happens in the rest of `graphgen`.

Exit codes: 0 success, 1 a node failed, 2 invalid workflow or usage, 130 cancelled (Ctrl-C).
No traceback is shown unless `--debug` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_NODE_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130


def _common(parser: argparse.ArgumentParser, workflow: bool = True) -> None:
    if workflow:
        parser.add_argument("workflow", help="workflow JSON file (graphgen or ComfyUI API format)")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help="set an input (NODE.INPUT=VALUE) or a workflow parameter (PARAM=VALUE); repeatable")
    parser.add_argument("--plugins", action="append", default=[], metavar="DIR",
                        help="load node packs from this plugin folder (repeatable; also GRAPHGEN_PLUGIN_PATH)")
    parser.add_argument("--models-dir", type=Path, default=None, help="models folder (ComfyUI layout)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphgen", description="Run node-graph diffusion workflows (Kolors first).")
    parser.add_argument("--version", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="validate and run a workflow (JSON, ComfyUI UI/API, or a PNG that carries one)")
    _common(run)
    run.add_argument("--output-dir", type=Path, default=Path("output"), help="where outputs are written (default: output)")
    run.add_argument("--input-dir", type=Path, default=Path("input"), help="where input images are found (default: input)")
    run.add_argument("--force", action="append", default=[], metavar="NODE", help="re-run this node even if cached")
    run.add_argument("--target", action="append", default=[], metavar="NODE",
                     help="run only this node and what it needs (repeatable; default: every output node)")
    from graphgen.batch.command import add_batch_arguments

    add_batch_arguments(run)
    run.set_defaults(handler=cmd_run)

    validate = sub.add_parser("validate", help="check a workflow without running it")
    _common(validate)
    validate.set_defaults(handler=cmd_validate)

    nodes = sub.add_parser("nodes", help="list node types, or describe one")
    nodes.add_argument("type", nargs="?", help="a node type to describe")
    _common(nodes, workflow=False)
    nodes.set_defaults(handler=cmd_nodes)

    schema = sub.add_parser("schema", help="print the JSON Schema of graphgen workflows")
    schema.set_defaults(handler=cmd_schema, debug=False)

    conv = sub.add_parser("convert", help="convert a ComfyUI workflow (UI or API JSON, or a PNG) to graphgen's format")
    conv.add_argument("source", type=Path, help="ComfyUI UI/API JSON, graphgen JSON, or a PNG with a workflow")
    conv.add_argument("target", type=Path, help="the JSON file to write (never overwritten)")
    conv.add_argument("--api", action="store_true", help="write ComfyUI's API format instead")
    conv.add_argument("--keep-ui", action="store_true", help="keep the original UI JSON in the metadata")
    conv.add_argument("--plugins", action="append", default=[], metavar="DIR", help="extra node packs")
    conv.add_argument("--models-dir", type=Path, default=None, help=argparse.SUPPRESS)
    conv.add_argument("--json", action="store_true", help="machine-readable errors")
    conv.add_argument("--debug", action="store_true", help="show tracebacks")
    conv.set_defaults(handler=cmd_convert)

    demo = sub.add_parser("demo", help="train a LoRA on tiny models and render with it: the whole job on the CPU")
    demo.add_argument("--dir", type=Path, default=Path("graphgen-demo"), help="demo folder (default: graphgen-demo)")
    demo.add_argument("--json", action="store_true", help="JSON events instead of the live view")
    demo.add_argument("--debug", action="store_true", help="show tracebacks")
    demo.set_defaults(handler=cmd_demo)

    lora = sub.add_parser("lora", help="LoRA tools")
    lora_sub = lora.add_subparsers(dest="lora_command", metavar="COMMAND", required=True)
    convert = lora_sub.add_parser("convert", help="convert a LoRA (DiffSynth .ckpt, peft, diffusers, kohya) "
                                                  "to kohya, diffusers or peft safetensors")
    convert.add_argument("source", type=Path, help="LoRA file in any supported format")
    convert.add_argument("target", type=Path, help="the .safetensors file to write (never overwritten)")
    convert.add_argument("--to", required=True, choices=["kohya", "diffusers", "peft"], help="output format")
    convert.add_argument("--lora-alpha", type=float, default=None,
                         help="alpha for files that store none (DiffSynth .ckpt: the training --lora_alpha)")
    convert.add_argument("--debug", action="store_true", help="show tracebacks")
    convert.set_defaults(handler=cmd_lora_convert)

    from graphgen.server.command import add_serve_parser

    add_serve_parser(sub)

    tiny = sub.add_parser("tiny-models", help="write tiny random-weight Kolors, SD1.5 and SDXL models (tests, demos, benchmarks)")
    tiny.add_argument("directory", type=Path, help="where to write them (tutorial/, diffusers/, comfyui/ inside)")
    tiny.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    tiny.add_argument("--debug", action="store_true", help="show tracebacks")
    tiny.set_defaults(handler=cmd_tiny_models)
    return parser


class UsageError(Exception):
    """A problem with the command line itself (exit code 2)."""


def _console(stderr: bool = False) -> Any:
    from graphgen.console import make_console

    return make_console(stderr)


def _engine(args: argparse.Namespace, **settings: Any) -> Any:
    from graphgen import Engine
    from graphgen.console import print_pack_problems

    for directory in args.plugins:
        if not Path(directory).is_dir():
            raise UsageError(f"--plugins {directory}: no such folder")
    engine = Engine(plugins=args.plugins, models_dir=args.models_dir, **settings)
    if engine.registry.problems:
        tracebacks = {name: info.traceback or "" for name, info in engine.registry.packs.items()}
        print_pack_problems(_console(stderr=True), engine.registry.problems, args.debug, tracebacks)
    return engine


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from graphgen.overrides import parse_set_arguments

    return parse_set_arguments(args.overrides)


#: The shipped workflows (a source checkout or an editable install; a wheel has none).
SHIPPED_WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _find_shipped(args: argparse.Namespace) -> None:
    """`workflows/NAME.json` named from another folder (as the README and `tiny-models` print it): the
    shipped file, said on stderr, instead of "does not exist"."""
    given = Path(str(args.workflow))
    if given.is_absolute() or given.exists() or given.parent not in (Path("."), Path("workflows")):
        return
    shipped = SHIPPED_WORKFLOWS / given.name
    if given.suffix.lower() == ".json" and shipped.is_file():
        print(f"graphgen: no {given} here; using the shipped {shipped}", file=sys.stderr)
        args.workflow = str(shipped)


def cmd_validate(args: argparse.Namespace) -> int:
    from graphgen.errors import WorkflowError

    _find_shipped(args)
    engine = _engine(args)
    try:
        prepared = engine.prepare(args.workflow, _overrides(args))
    except WorkflowError as exc:
        return _invalid(args, exc)
    if args.json:
        print(json.dumps({"valid": True, "nodes": len(prepared.nodes), "output_nodes": prepared.output_nodes}))
    else:
        _console().print(f"[green]valid[/]: {len(prepared.nodes)} nodes, output nodes "
                         f"{', '.join(prepared.output_nodes)}")
    return EXIT_OK


def _invalid(args: argparse.Namespace, exc: Any) -> int:
    from graphgen.console import print_issues

    if args.json:
        print(json.dumps({"valid": False, **exc.to_dict()}, ensure_ascii=False))
    else:
        print_issues(_console(stderr=True), exc.issues, str(getattr(args, "workflow", "")))
    return EXIT_INVALID


def cmd_run(args: argparse.Namespace) -> int:
    from graphgen.batch.command import batch_requested, run_batch_command
    from graphgen.console import JsonEventWriter, RunView, print_summary
    from graphgen.errors import WorkflowError

    _find_shipped(args)
    if batch_requested(args):
        return run_batch_command(args, lambda **settings: _engine(args, **settings))

    engine = _engine(args, output_dir=args.output_dir, input_dir=args.input_dir)
    targets: list[str] | None = list(dict.fromkeys(args.target)) or None
    try:
        # With --target, problems of outputs that are not targeted do not stop the run.
        prepared = engine.prepare(args.workflow, _overrides(args), partial=targets is not None)
    except WorkflowError as exc:
        return _invalid(args, exc)
    for option, ids in (("--force", args.force), ("--target", targets or [])):
        missing = [n for n in ids if n not in prepared.workflow.nodes]
        if missing:
            raise UsageError(f"{option} {missing[0]}: the workflow has no node {missing[0]!r}")
    if targets is not None:
        import networkx as nx

        needed = set(targets)
        for target in targets:
            needed |= nx.ancestors(prepared.graph, target)
        blocking = [i for i in prepared.issues if i.node_id in needed or i.node_id is None]
        if blocking or any(t not in prepared.nodes for t in targets):
            return _invalid(args, WorkflowError(blocking or prepared.issues))
    _warn_long_cpu_run(prepared)
    from graphgen.interrupts import StopOnInterrupt

    with StopOnInterrupt(engine.cancel, "cancelling at the next step"):
        if args.json:
            result = engine.run(prepared, on_event=JsonEventWriter(), force=args.force, outputs=targets)
        else:
            console = _console()
            with RunView(console) as view:
                result = engine.run(prepared, on_event=view, force=args.force, outputs=targets)
            print_summary(console, result, debug=args.debug)
    return {"success": EXIT_OK, "failed": EXIT_NODE_FAILED, "cancelled": EXIT_CANCELLED}[result.status]


def _accelerated() -> bool:
    """Whether torch sees a GPU (CUDA or Apple's MPS); False without torch."""
    try:
        import torch
    except ImportError:
        return False
    mps = getattr(torch.backends, "mps", None)
    return bool(torch.cuda.is_available() or (mps is not None and mps.is_available()))


def _warn_long_cpu_run(prepared: Any) -> None:
    """Before a long run on a CPU, say what it will cost and how to make it small (on stderr)."""
    from graphgen.cost import cpu_warning

    warning = cpu_warning(prepared, _accelerated())
    if warning:
        from rich.markup import escape

        _console(stderr=True).print(f"[yellow]note:[/] {escape(warning)}", soft_wrap=True)


def cmd_nodes(args: argparse.Namespace) -> int:
    engine = _engine(args)
    specs = engine.registry.listed()
    if args.type:
        try:
            spec = engine.registry.get(args.type)
        except KeyError:
            packs = engine.registry.ambiguity(args.type)
            if packs:
                raise UsageError(f"node type {args.type!r} is defined by packs {', '.join(packs)}: describe one as "
                                 + " or ".join(f"{p}/{args.type}" for p in packs)) from None
            close = [c for c in engine.registry.closest(args.type) if c != args.type]
            raise UsageError(f"unknown node type {args.type!r}" +
                             (f"; did you mean {', '.join(close)}?" if close else "")) from None
        if args.json:
            print(json.dumps(spec.describe(), indent=2, default=str, ensure_ascii=False))
        else:
            _describe_node(spec.describe())
        return EXIT_OK
    if args.json:
        print(json.dumps([{**specs[name].describe(), "type": name} for name in sorted(specs)], indent=2, default=str,
                         ensure_ascii=False))
        return EXIT_OK
    from rich.table import Table

    columns = ("type", "category", "pack", "inputs", "outputs")
    rows = [(name, specs[name].category, specs[name].pack,
             ", ".join(n for n, i in specs[name].inputs.items() if not i.hidden),
             ", ".join(f"{o.name}:{o.type}" for o in specs[name].outputs)) for name in sorted(specs)]
    if not sys.stdout.isatty():  # piped (grep, cut, less): one tab-separated line per node, as `ls` does
        print("\t".join(columns))
        for row in rows:
            print("\t".join(row))
        return EXIT_OK
    table = Table(show_edge=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    _console().print(table)
    return EXIT_OK


def _describe_node(info: dict[str, Any]) -> None:
    from rich.markup import escape

    console = _console()
    console.print(f"[bold]{escape(info['type'])}[/]  [dim]{escape(info['category'])} · pack {escape(info['pack'])} · "
                  f"version {escape(info['version'])}{' · output node' if info['output_node'] else ''}[/]")
    if info["description"]:
        console.print(escape(info["description"]))
    console.print("[bold]inputs[/]")
    for item in info["inputs"]:
        extras = ", ".join(f"{k}={v!r}" for k, v in item.items() if k not in ("name", "type", "description", "optional"))
        console.print(f"  {escape(item['name'])}: {escape(item['type'])}{' (optional)' if item['optional'] else ''}"
                      f"{' ' + escape(extras) if extras else ''}" +
                      (f"\n    [dim]{escape(item['description'])}[/]" if item.get("description") else ""))
    console.print("[bold]outputs[/]")
    for index, item in enumerate(info["outputs"]):
        console.print(f"  {index}: {escape(item['name'])}: {escape(item['type'])}")


def cmd_schema(args: argparse.Namespace) -> int:
    from graphgen.workflow import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from graphgen.comfy_ui import convert_file
    from graphgen.errors import WorkflowError

    engine = _engine(args)
    try:
        written = convert_file(args.source, args.target, engine.registry, api=args.api, keep_ui=args.keep_ui)
    except WorkflowError as exc:
        args.workflow = str(args.source)
        return _invalid(args, exc)
    _console().print(f"[green]wrote[/] {written} ({'ComfyUI API' if args.api else 'graphgen'} format)")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from graphgen.console import JsonEventWriter, RunView, print_summary, step_bar
    from graphgen.testing.demo import DemoFolderError, models_ready, prepare_demo, run_demo

    console = _console()
    console.print(f"[bold]graphgen demo[/] in {args.dir}: tiny Kolors models, a dataset of red discs, "
                  "train a LoRA with TrainLoRA, render with and without it (CPU)")
    try:
        if args.json:
            demo = run_demo(args.dir, on_event=JsonEventWriter())
        else:
            if not models_ready(args.dir):  # the one-time build, about half a minute: show it
                with step_bar(console, "building the demo's models (once): pretraining the base UNet") as advance:
                    prepare_demo(args.dir, on_build=advance)
            with RunView(console) as view:
                demo = run_demo(args.dir, on_event=view)
    except DemoFolderError as exc:
        raise UsageError(str(exc)) from None
    result = demo.result
    if not args.json:
        print_summary(console, result, debug=args.debug)
        if result.ok:
            console.print(f"  LoRA:        {demo.lora}")
            console.print(f"  loss curve:  {demo.loss_curve}  (log: {demo.loss_log})")
            for label, image in zip(("with LoRA", "base model"), demo.images, strict=False):
                console.print(f"  image ({label}): {image}")
            for grid in demo.samples:
                console.print(f"  samples:     {grid}")
            console.print(f"  distance to the training images (mean colour difference per pixel, 0-255): "
                          f"with LoRA {demo.colour_lora:.1f}, base model {demo.colour_base:.1f}")
            console.print(f"  loss: first tenth of the steps {demo.loss_first:.4f}, last tenth {demo.loss_last:.4f}")
            console.print("Run it again: the LoRA is reused (same data and parameters), new images are numbered.")
    return {"success": EXIT_OK, "failed": EXIT_NODE_FAILED, "cancelled": EXIT_CANCELLED}[result.status]


def cmd_lora_convert(args: argparse.Namespace) -> int:
    from graphgen_nodes.lora.convert import convert_lora
    from graphgen_nodes.lora.lora_file import LoraError

    if not args.source.is_file():
        raise UsageError(f"{args.source}: no such LoRA file")
    if args.target.exists():
        raise UsageError(f"{args.target} exists; choose a new file name (nothing is overwritten)")
    try:
        written = convert_lora(args.source, args.target, to=args.to, lora_alpha=args.lora_alpha)
    except (LoraError, ValueError) as exc:
        text = str(exc)
        print(f"graphgen: error: {text if text.startswith(str(args.source)) else f'{args.source}: {text}'}",
              file=sys.stderr)
        return EXIT_INVALID
    from graphgen_nodes.lora.lora_file import read_lora

    lora = read_lora(written)
    _console().print(f"[green]wrote[/] {written} ({args.to}, {len(lora.modules)} modules, "
                     f"rank {', '.join(str(r) for r in sorted(lora.ranks))})")
    return EXIT_OK


def tiny_model_commands(paths: Any, workflow: str = "workflows/kolors_txt2img.json") -> dict[str, list[str]]:
    """For each layout `tiny-models` writes, a `graphgen run` command line that works with the
    shipped workflows as they are (small sizes, so that it takes seconds on a CPU)."""
    small = ["--set", "width=256", "--set", "height=256", "--set", "steps=4"]
    diffusers = str(paths.diffusers_root)
    return {
        "tutorial layout": ["graphgen", "run", workflow, "--models-dir", str(paths.tutorial_models), *small],
        "ComfyUI layout": ["graphgen", "run", workflow, "--models-dir", str(paths.comfyui_models),
                           "--set", "kolors=Kolors", "--set", f"vae={paths.comfyui_vae_file.name}", *small],
        "diffusers layout": ["graphgen", "run", workflow, "--set", f"kolors={diffusers}", "--set", f"vae={diffusers}",
                             *small],
    }


def tiny_sd_commands(models: Path, dataset: Path) -> dict[str, list[str]]:
    """`graphgen run` command lines for the shipped SD1.5/SDXL workflows on the tiny checkpoints in
    `models` (a ComfyUI models folder), training on the kohya folder `dataset`.

    Small sizes and few steps, so that each takes seconds on a CPU; the training runs use a high
    learning rate (1e-3) so that 8 steps visibly change the random-weight model's image, and
    buckets of 64-128 pixels (steps of 32) so that the dataset's mixed shapes land in three.
    """
    from graphgen.testing.demo_data import KOHYA_CAPTION

    small = ["--set", "width=64", "--set", "height=64", "--set", "steps=4"]
    where = ["--models-dir", str(models)]
    train = [*where, "--set", f"dataset={dataset}", "--set", f"prompt={KOHYA_CAPTION}",
             "--set", "train_height=96", "--set", "train_width=96", "--set", "min_bucket_reso=64",
             "--set", "bucket_reso_steps=32", "--set", "steps_per_epoch=8", "--set", "sample_every_n_steps=4",
             "--set", "learning_rate=1e-3", *small]
    return {
        "SD1.5 text to image": ["graphgen", "run", "workflows/sd15_txt2img.json", *where, *small],
        "SDXL + refiner text to image": ["graphgen", "run", "workflows/sdxl_txt2img.json", *where, *small,
                                         "--set", "refiner_start=3"],
        "SD1.5 LoRA training (kohya folders), then with/without it":
            ["graphgen", "run", "workflows/sd15_train_lora.json", *train],
        "SDXL LoRA training (kohya folders), then with/without it":
            ["graphgen", "run", "workflows/sdxl_train_lora.json", *train],
    }


def cmd_tiny_models(args: argparse.Namespace) -> int:
    import shlex

    from rich.markup import escape

    from graphgen.testing.demo_data import write_kohya_dataset
    from graphgen.testing.tiny_kolors import write_tiny_models
    from graphgen.testing.tiny_sd import write_tiny_sd_models

    if args.directory.exists() and any(args.directory.iterdir()):
        raise UsageError(f"{args.directory} is not empty; give a new or empty folder (nothing is overwritten)")
    paths = write_tiny_models(args.directory, seed=args.seed)
    console = _console()
    console.print(f"[green]tiny Kolors models[/] (seed {args.seed}) written to {escape(str(paths.root))}")
    console.print("Random weights: the images are noise, but every node runs as with real weights. "
                  "Try a shipped workflow on each layout:")
    for layout, command in tiny_model_commands(paths).items():
        console.print(f"  {layout}:\n    {escape(shlex.join(command))}", soft_wrap=True)
    console.print(f"  ComfyUI workflows (kijai's nodes) run with --models-dir {escape(str(paths.comfyui_models))}",
                  soft_wrap=True)
    sd = write_tiny_sd_models(paths.comfyui_models, seed=args.seed)
    dataset = write_kohya_dataset(paths.root / "dataset")
    console.print("  SD1.5 / SDXL / SDXL refiner single files (original key layout) in its checkpoints/: "
                  + ", ".join(p.name for p in sd.checkpoints.values()), soft_wrap=True)
    console.print("  kohya LoRAs in its loras/: " + ", ".join(p.name for p in sd.loras.values()), soft_wrap=True)
    console.print(f"  a kohya-style dataset (mixed aspect ratios, same-name .txt captions): "
                  f"{escape(str(dataset / '10_reddisc'))}", soft_wrap=True)
    console.print("SD1.5 and SDXL workflows on them:")
    for label, command in tiny_sd_commands(sd.models, dataset).items():
        console.print(f"  {label}:\n    {escape(shlex.join(command))}", soft_wrap=True)
    return EXIT_OK


def _reader_went_away() -> int:
    """`graphgen nodes --json | head -1`: the reader has what it wanted; exit quietly with 0.

    What is still buffered for stdout is dropped (pointing stdout at /dev/null), so that the
    interpreter's final flush does not raise a second BrokenPipeError.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `graphgen` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from graphgen import __version__

        print(f"graphgen {__version__}")
        return EXIT_OK
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_INVALID
    debug = getattr(args, "debug", False) or os.environ.get("GRAPHGEN_DEBUG") == "1"
    if not debug:
        # Library chatter (deprecation notices from transformers/diffusers) is not for end users.
        for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
            os.environ.setdefault(name, "error")
        import warnings

        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        print(f"graphgen: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("graphgen: aborted", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:
        return _reader_went_away()
    except Exception as exc:
        from graphgen.errors import WorkflowError

        if isinstance(exc, WorkflowError):
            return _invalid(args, exc)
        if debug:
            raise
        print(f"graphgen: error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_NODE_FAILED


if __name__ == "__main__":
    sys.exit(main())
