"""Engine overhead per node: first run, fully cached re-run, and a re-run after one change.

    python benchmarks/engine_overhead.py [--sizes 200,500,1000,2000,5000] [--repeat 3]
                                         [--style graphgen|classic|both] [--compare DIR]

`--style classic` runs the same graph built from ComfyUI classic node classes (INPUT_TYPES,
FUNCTION...); `--compare DIR` also runs this benchmark against another checkout of graphgen (e.g.
`git worktree add /tmp/base <commit>`) in a child process, alternating with this one, and prints
the ratios side by side (values below 1.0: this checkout is faster).

The graph is a chain of trivial integer nodes where node i also reads node i//2 (so the graph
is not a plain list), ending in one output node. Times are end to end as an app sees them:
loading the workflow dict, validation (memoized per Engine for identical workflows, so a fully cached
re-run skips it; a changed workflow is validated again), planning, execution and caching. Targets: under 100 µs per
executed node, under 20 µs per cached node, and per-node cost that stays flat as graphs grow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from graphgen import Engine, Int, Node, NodeRegistry, Output, Result


class Seed(Node):
    inputs = [Int("value", default=0)]
    outputs = [Output("INT", "value")]

    def run(self, value: int) -> int:
        return value


class Mix(Node):
    inputs = [Int("a"), Int("b"), Int("k", default=1, min=0, max=1_000_000)]
    outputs = [Output("INT", "value")]

    def run(self, a: int, b: int, k: int) -> int:
        return (a + b * k) % 1_000_003


class Sink(Node):
    output_node = True
    inputs = [Int("value")]

    def run(self, value: int) -> Result:
        return Result(ui={"value": [value]})


class ClassicSeed:
    """The same three nodes, written as ComfyUI classic classes."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 - ComfyUI's name
        return {"required": {"value": ("INT", {"default": 0})}}

    def run(self, value: int) -> tuple[int]:
        return (value,)


class ClassicMix:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802
        return {"required": {"a": ("INT",), "b": ("INT",), "k": ("INT", {"default": 1, "min": 0, "max": 1_000_000})}}

    def run(self, a: int, b: int, k: int) -> tuple[int]:
        return ((a + b * k) % 1_000_003,)


class ClassicSink:
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802
        return {"required": {"value": ("INT",)}}

    def run(self, value: int) -> dict:
        return {"ui": {"value": [value]}}


def make_workflow(n: int, changed: int | None = None, prefix: str = "") -> dict:
    nodes: dict = {"0": {"class_type": prefix + "Seed", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        k = i + (7 if i == changed else 0)
        nodes[str(i)] = {"class_type": prefix + "Mix", "inputs": {"a": [str(i - 1), 0], "b": [str(i // 2), 0], "k": k}}
    nodes[str(n - 1)] = {"class_type": prefix + "Sink", "inputs": {"value": [str(n - 2), 0]}}
    return nodes


def registry() -> NodeRegistry:
    reg = NodeRegistry()
    for node in (Seed, Mix, Sink, ClassicSeed, ClassicMix, ClassicSink):
        reg.register(node, pack="bench")
    return reg


def measure(n: int, repeat: int, style: str = "graphgen") -> dict[str, float]:
    first, cached, changed, reexec = [], [], [], 0
    middle = n // 2
    prefix = "Classic" if style == "classic" else ""
    for _ in range(repeat):
        engine = Engine(registry=registry(), cache_entries=4 * n)
        wf, wf_changed = make_workflow(n, prefix=prefix), make_workflow(n, changed=middle, prefix=prefix)
        t0 = time.perf_counter()
        r1 = engine.run(wf)
        t1 = time.perf_counter()
        r2 = engine.run(wf)
        t2 = time.perf_counter()
        r3 = engine.run(wf_changed)
        t3 = time.perf_counter()
        assert len(r1.executed) == n and len(r2.cached) == n and r3.ok
        first.append((t1 - t0) / n)
        cached.append((t2 - t1) / n)
        reexec = len(r3.executed)
        changed.append((t3 - t2) / n)
    return {"executed_us": statistics.median(first) * 1e6, "cached_us": statistics.median(cached) * 1e6,
            "changed_us": statistics.median(changed) * 1e6, "reexecuted": reexec}


KEYS = ("executed_us", "cached_us", "changed_us")


def _other_checkout(directory: str, n: int, repeat: int, style: str) -> dict[str, float]:
    """This benchmark's figures for another graphgen checkout (a child process on its code)."""
    env = {**os.environ, "PYTHONPATH": str(Path(directory).resolve())}
    # This file's workload, on the other checkout's graphgen (PYTHONPATH wins over the install).
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import engine_overhead as b; print(json.dumps(b.measure({n}, {repeat}, {style!r})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=directory, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(directory: str, sizes: list[int], repeat: int, styles: list[str]) -> None:
    """Side by side with another checkout, alternating, best of `repeat` rounds each."""
    print(f"\nside by side with {directory} (ratio = this / other; best of {repeat} alternating rounds)")
    print(f"{'style':>9} {'nodes':>6} {'executed µs':>17} {'cached µs':>17} {'after change µs':>17}")
    for style in styles:
        for n in sizes:
            ours: dict[str, list[float]] = {k: [] for k in KEYS}
            theirs: dict[str, list[float]] = {k: [] for k in KEYS}
            for _ in range(repeat):
                a = measure(n, 1, style)
                b = _other_checkout(directory, n, 1, style)
                for k in KEYS:
                    ours[k].append(a[k])
                    theirs[k].append(b[k])
            cells = [f"{min(ours[k]):6.1f}/{min(theirs[k]):6.1f}={min(ours[k]) / min(theirs[k]):.2f}" for k in KEYS]
            print(f"{style:>9} {n:>6} " + " ".join(f"{c:>17}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200,500,1000,2000,5000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--style", choices=["graphgen", "classic", "both"], default="both")
    parser.add_argument("--compare", metavar="DIR", help="another graphgen checkout to compare with")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    styles = ["graphgen", "classic"] if args.style == "both" else [args.style]
    for style in styles:
        report(style, sizes, args.repeat)
    if args.compare:
        compare(args.compare, sizes, args.repeat, styles)


def report(style: str, sizes: list[int], repeat: int) -> None:
    print(f"\n{style} nodes")
    print(f"{'nodes':>6} {'µs/executed node':>17} {'µs/cached node':>15} {'µs/node after 1 change':>23} {'re-executed':>12}")
    rows = {}
    for n in sizes:
        row = measure(n, repeat, style)
        rows[n] = row
        print(f"{n:>6} {row['executed_us']:>17.1f} {row['cached_us']:>15.1f} {row['changed_us']:>23.1f} "
              f"{row['reexecuted']:>12}")
    small, large = rows[sizes[0]], rows[sizes[-1]]
    print(f"\ngrowth of per-node cost from {sizes[0]} to {sizes[-1]} nodes (1.0 = linear total time): "
          f"executed x{large['executed_us'] / small['executed_us']:.2f}, cached x{large['cached_us'] / small['cached_us']:.2f}")
    if 2000 in rows:
        row = rows[2000]
        print(f"2000 nodes: {row['executed_us']:.1f} µs per executed node (target < 100, ratio {row['executed_us'] / 100:.2f}), "
              f"{row['cached_us']:.1f} µs per cached node (target < 20, ratio {row['cached_us'] / 20:.2f})")


if __name__ == "__main__":
    main()
