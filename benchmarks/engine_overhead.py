"""Engine overhead per node: first run, fully cached re-run, and a re-run after one change.

    python benchmarks/engine_overhead.py [--sizes 200,500,1000,2000,5000] [--repeat 3]

The graph is a chain of trivial integer nodes where node i also reads node i//2 (so the graph
is not a plain list), ending in one output node. Times are end to end as an app sees them:
loading the workflow dict, validation (memoized per Engine for identical workflows, so a fully cached
re-run skips it; a changed workflow is validated again), planning, execution and caching. Targets: under 100 µs per
executed node, under 20 µs per cached node, and per-node cost that stays flat as graphs grow.
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def make_workflow(n: int, changed: int | None = None) -> dict:
    nodes: dict = {"0": {"class_type": "Seed", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        k = i + (7 if i == changed else 0)
        nodes[str(i)] = {"class_type": "Mix", "inputs": {"a": [str(i - 1), 0], "b": [str(i // 2), 0], "k": k}}
    nodes[str(n - 1)] = {"class_type": "Sink", "inputs": {"value": [str(n - 2), 0]}}
    return nodes


def registry() -> NodeRegistry:
    reg = NodeRegistry()
    for node in (Seed, Mix, Sink):
        reg.register(node, pack="bench")
    return reg


def measure(n: int, repeat: int) -> dict[str, float]:
    first, cached, changed, reexec = [], [], [], 0
    middle = n // 2
    for _ in range(repeat):
        engine = Engine(registry=registry(), cache_entries=4 * n)
        wf, wf_changed = make_workflow(n), make_workflow(n, changed=middle)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200,500,1000,2000,5000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'nodes':>6} {'µs/executed node':>17} {'µs/cached node':>15} {'µs/node after 1 change':>23} {'re-executed':>12}")
    rows = {}
    for n in sizes:
        row = measure(n, args.repeat)
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
