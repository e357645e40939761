"""An example pack written against ComfyUI's schema API (comfy_api.latest), loaded through
`comfy_entrypoint()` as ComfyUI loads such packs."""

from comfy_api.latest import ComfyExtension, io


class ScaleInt(io.ComfyNode):
    """Multiplies an integer; optionally shows the result."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SchemaScaleInt",
            display_name="Scale an integer",
            category="example/schema",
            inputs=[
                io.Int.Input("value", default=1, min=-1000, max=1000),
                io.Combo.Input("factor", options=["x2", "x3"], default="x2"),
                io.Boolean.Input("show", default=False, optional=True),
            ],
            outputs=[io.Int.Output(display_name="scaled")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, value, factor, show=False) -> io.NodeOutput:
        scaled = value * (2 if factor == "x2" else 3)
        ui = {"text": [f"{cls.hidden.unique_id}: {scaled}"]} if show else None
        return io.NodeOutput(scaled, ui=ui)


class PickLazy(io.ComfyNode):
    """Returns `first` or `second`; only the chosen one is evaluated."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SchemaPickLazy",
            category="example/schema",
            inputs=[io.Boolean.Input("use_first", default=True),
                    io.AnyType.Input("first", lazy=True),
                    io.AnyType.Input("second", lazy=True)],
            outputs=[io.AnyType.Output()],
        )

    @classmethod
    def check_lazy_status(cls, use_first, first=None, second=None):
        return ["first"] if use_first else ["second"]

    @classmethod
    def execute(cls, use_first, first=None, second=None) -> io.NodeOutput:
        return io.NodeOutput(first if use_first else second)


class ShowAll(io.ComfyNode):
    """Output node: shows every value it is given (the whole list at once)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="SchemaShowAll", category="example/schema", is_output_node=True,
                         is_input_list=True, inputs=[io.AnyType.Input("values")], outputs=[])

    @classmethod
    def validate_inputs(cls, values):
        return True

    @classmethod
    async def execute(cls, values) -> io.NodeOutput:
        return io.NodeOutput(ui={"text": [str(v) for v in values]})


class SchemaExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [ScaleInt, PickLazy, ShowAll]


async def comfy_entrypoint() -> SchemaExtension:
    return SchemaExtension()
