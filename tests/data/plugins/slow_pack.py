"""A node that takes a while and reports steps (used to test Ctrl-C)."""

import time

from graphgen import Int, Node, Output, Result


class SlowCount(Node):
    category = "test"
    inputs = [Int("steps", default=100, min=1, max=100000), Int("ms", default=20, min=0, max=10000)]
    outputs = [Output("INT", "count")]

    def run(self, steps, ms):
        for i in range(steps):
            time.sleep(ms / 1000)
            self.ctx.progress(i + 1, steps)
        return steps


class ShowCount(Node):
    category = "test"
    output_node = True
    inputs = [Int("count")]

    def run(self, count):
        return Result(ui={"text": [str(count)]})


NODES = [SlowCount, ShowCount]
