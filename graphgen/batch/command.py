"""`graphgen run WORKFLOW --sweep ... | --batch FILE [--ray ADDRESS] [--workers N] [--resume]`.

`add_batch_arguments(run_parser)` adds the flags; `cmd_run` hands over to
`run_batch_command(args, engine_factory)` when `batch_requested(args)`. Exit codes as for
`graphgen run`: 0 every job done, 1 some job failed or did not run, 2 usage (bad sweep, Ray missing
or unreachable, outputs in the way, every job invalid), 130 cancelled.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graphgen.interrupts import StopOnInterrupt

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the batch flags to `graphgen run`'s parser."""
    group = parser.add_argument_group("batches", "run the workflow once per job; each job's outputs go to "
                                      "OUTPUT_DIR/<batch>/<job>/, written once")
    group.add_argument("--sweep", action="append", default=[], metavar="EXPR",
                       help="jobs from values: seed=1..64, seed=1,2,3, prompt=@prompts.txt, "
                            "prompt='[\"a, b\", \"c\"]'; repeated --sweep multiply, 'a=..; b=..' in one zips")
    group.add_argument("--batch", type=Path, default=None, metavar="FILE",
                       help="a batch file (JSON: name, overrides, sweep, jobs)")
    group.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run the jobs on Ray, one worker per GPU: auto (the cluster on this machine), "
                            "HOST:PORT, or local (a new local cluster); needs pip install 'graphgen[ray]'")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="Ray workers to start (default: one per GPU of the cluster)")
    group.add_argument("--resume", action="store_true",
                       help="skip jobs whose outputs exist (without it, existing outputs are an error)")


def batch_requested(args: argparse.Namespace) -> bool:
    """True when any batch flag was given (then `cmd_run` calls `run_batch_command`)."""
    return bool(getattr(args, "sweep", None) or getattr(args, "batch", None) or getattr(args, "ray", None)
                or getattr(args, "workers", None) is not None or getattr(args, "resume", False))


def _error(message: str) -> int:
    print(f"graphgen: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def build_spec(args: argparse.Namespace) -> Any:
    """The `BatchSpec` of the command line: --batch FILE, then --set (common) and --sweep."""
    from graphgen.batch.spec import BatchSpec, load_batch_file
    from graphgen.overrides import parse_set_arguments

    common = parse_set_arguments(getattr(args, "overrides", []) or [])
    spec = load_batch_file(args.batch) if args.batch else BatchSpec()
    spec.overrides = {**spec.overrides, **common}
    for expression in args.sweep:
        spec.add_sweep(expression, base_dir=Path.cwd())
    return spec


def run_batch_command(args: argparse.Namespace, engine_factory: Callable[..., Any]) -> int:
    """Run `graphgen run` as a batch. `engine_factory(output_dir=..., input_dir=...)` makes the local Engine."""
    from graphgen.batch.runner import BatchError, make_executor, run_batch
    from graphgen.batch.spec import BatchSpecError
    from graphgen.errors import WorkflowError

    output_dir = Path(getattr(args, "output_dir", "output"))
    input_dir = Path(getattr(args, "input_dir", "input"))
    plugins = list(getattr(args, "plugins", []) or [])
    try:
        spec = build_spec(args)
        if args.ray:
            for directory in plugins:
                if not Path(directory).is_dir():
                    return _error(f"--plugins {directory}: no such folder")
            settings = {"input_dir": input_dir, "models_dir": getattr(args, "models_dir", None), "plugins": plugins}
            executor = make_executor("ray", engine_settings=settings, workers=args.workers, address=args.ray)
        else:
            if args.workers not in (None, 1):
                return _error("--workers needs --ray (a local batch runs its jobs one by one on one Engine)")
            executor = make_executor("local", engine=engine_factory(output_dir=output_dir, input_dir=input_dir),
                                     engine_settings={})
    except WorkflowError as exc:  # a bad --set
        return _error(str(exc))
    except (BatchSpecError, BatchError) as exc:
        return _error(str(exc))

    stop = threading.Event()

    def stop_batch() -> None:
        stop.set()
        executor.cancel()

    try:
        with StopOnInterrupt(stop_batch, "stopping: no new jobs; --resume later finishes the batch"):
            if args.json:
                from graphgen.console import JsonEventWriter

                result = _run(run_batch, args, spec, executor, output_dir, input_dir, stop, JsonEventWriter())
            else:
                from graphgen.batch.view import BatchView, print_batch_summary
                from graphgen.console import make_console

                console = make_console()
                with BatchView(console) as view:
                    result = _run(run_batch, args, spec, executor, output_dir, input_dir, stop, view)
                print_batch_summary(console, result)
    except (BatchSpecError, BatchError) as exc:
        return _error(str(exc))
    finally:
        executor.close()
    ran = [job for job in result.jobs if job.status not in ("done_before", "not_run")]
    if ran and all(job.status == "invalid" for job in ran):
        return _error(f"every job was invalid; the first: {ran[0].error}")
    return {"success": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}[result.status]


def _run(run_batch: Callable[..., Any], args: argparse.Namespace, spec: Any, executor: Any, output_dir: Path,
         input_dir: Path, stop: threading.Event, on_event: Callable[[Any], None]) -> Any:
    return run_batch(args.workflow, spec, executor=executor, output_dir=output_dir, input_dir=input_dir,
                     models_dir=getattr(args, "models_dir", None), resume=args.resume,
                     force=getattr(args, "force", []) or [], on_event=on_event, stop=stop)


