"""A graphgen-style plugin pack in a single file: numbers with bounds, choices and typed links."""

from graphgen import Choice, Float, Int, Link, Node, Output, Result


class Number(Node):
    """An integer between 0 and 100."""

    category = "math"
    inputs = [Int("value", default=1, min=0, max=100)]
    outputs = [Output("INT", "value")]

    def run(self, value):
        return value


class Combine(Node):
    category = "math"
    inputs = [Int("a"), Int("b", default=1), Choice("op", ["add", "mul"]), Float("gain", default=1.0, min=0.0, max=4.0)]
    outputs = [Output("INT", "result"), Output("FLOAT", "scaled")]

    def run(self, a, b, op, gain):
        value = a + b if op == "add" else a * b
        return value, value * gain


class Pipe(Node):
    category = "math"
    inputs = [Link("pipe", "PIPE")]
    outputs = [Output("PIPE", "pipe")]

    def run(self, pipe):
        return pipe


class PrintNumber(Node):
    category = "math"
    output_node = True
    inputs = [Int("value")]

    def run(self, value):
        return Result(ui={"text": [str(value)]})


NODES = [Number, Combine, Pipe, PrintNumber]
