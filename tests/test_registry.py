"""Registry: packs from code, plugin folders, entry points; collisions and import failures."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from engine_nodes import Add, Const

from graphgen import Engine, WorkflowError
from graphgen.registry import NodeRegistry, UnknownNodeType, default_registry

PLUGINS = Path(__file__).parent / "data" / "plugins"


def test_register_and_lookup_qualified():
    registry = NodeRegistry()
    registry.register(Const, pack="p")
    assert registry.get("Const").pack == "p"
    assert registry.get("p/Const") is registry.get("Const")
    with pytest.raises(UnknownNodeType):
        registry.get("Nope")
    assert registry.closest("const") == ["Const"]


def test_collision_keeps_both_and_reports():
    registry = NodeRegistry()
    registry.register(Const, pack="one")
    registry.register(Add, pack="two", name="Const")
    assert "Const" not in registry.specs()
    assert registry.ambiguity("Const") == ["one", "two"]
    assert registry.get("one/Const").source is Const and registry.get("two/Const").source is Add
    (problem,) = [p for p in registry.problems if p.kind == "collision"]
    assert "'one'" in problem.message and "'two'" in problem.message


def test_same_pack_registering_twice_is_an_error():
    registry = NodeRegistry()
    registry.register(Const, pack="p")
    registry.register(Const, pack="p")  # the same class again is harmless
    with pytest.raises(ValueError, match="twice"):
        registry.register(Add, pack="p", name="Const")


def test_plugin_folder_loads_classic_and_native_packs():
    registry = NodeRegistry()
    registry.load_plugin_dir(PLUGINS)
    assert registry.get("StringRepeat").style == "comfyui-classic"
    assert registry.get("StringRepeat").display_name == "Repeat a string"
    assert registry.get("Combine").style == "graphgen"
    assert registry.packs["classic_pack"].node_types == ["StringRepeat", "SaveText", "RandomPick"]
    assert not registry.problems


def test_broken_pack_reported_and_others_load(tmp_path):
    (tmp_path / "bad.py").write_text("import does_not_exist_anywhere\n", encoding="utf-8")
    (tmp_path / "good.py").write_text(textwrap.dedent("""
        from graphgen import Node, Output
        class Hello(Node):
            outputs = [Output("STRING", "text")]
            def run(self):
                return "hi"
        NODES = [Hello]
    """), encoding="utf-8")
    (tmp_path / "_private.py").write_text("raise SystemExit\n", encoding="utf-8")
    (tmp_path / "off.py.disabled").write_text("raise SystemExit\n", encoding="utf-8")
    registry = NodeRegistry()
    registry.load_plugin_dir(tmp_path)
    assert "Hello" in registry
    (problem,) = registry.problems
    assert problem.kind == "import_failed" and "does_not_exist_anywhere" in problem.message
    assert registry.packs["bad"].traceback and "ModuleNotFoundError" in registry.packs["bad"].error


def test_invalid_node_class_is_reported(tmp_path):
    (tmp_path / "weird.py").write_text(textwrap.dedent("""
        class NoFunction:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ()
            FUNCTION = "missing"
        NODE_CLASS_MAPPINGS = {"NoFunction": NoFunction, "NotANode": object}
    """), encoding="utf-8")
    registry = NodeRegistry()
    registry.load_plugin_dir(tmp_path)
    messages = " ".join(p.message for p in registry.problems)
    assert "NoFunction" in messages and "NotANode" in messages and "NoFunction" not in registry


def test_folder_that_is_itself_a_pack(tmp_path):
    pack = tmp_path / "mypack"
    pack.mkdir()
    (pack / "impl.py").write_text(textwrap.dedent("""
        class Upper:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"text": ("STRING", {})}}
            RETURN_TYPES = ("STRING",)
            FUNCTION = "go"
            def go(self, text):
                return (text.upper(),)
    """), encoding="utf-8")
    (pack / "__init__.py").write_text("from .impl import Upper\nNODE_CLASS_MAPPINGS = {'Upper': Upper}\n",
                                      encoding="utf-8")
    registry = NodeRegistry()
    registry.load_plugin_dir(pack)
    assert registry.get("Upper").pack == "mypack"


def test_plugin_path_env(monkeypatch):
    monkeypatch.setenv("GRAPHGEN_PLUGIN_PATH", str(PLUGINS))
    registry = default_registry(builtin=False, entry_points=False)
    assert "StringRepeat" in registry


def test_entry_point_packs(tmp_path, monkeypatch):
    """An installed distribution declaring the `graphgen.nodes` group is found."""
    site = tmp_path / "site"
    (site / "demo_pack").mkdir(parents=True)
    (site / "demo_pack" / "__init__.py").write_text(textwrap.dedent("""
        from graphgen import Node, Int, Output
        class Triple(Node):
            inputs = [Int("x", default=1)]
            outputs = [Output("INT", "x")]
            def run(self, x):
                return 3 * x
        NODES = [Triple]
        def more():
            return [Triple]
    """), encoding="utf-8")
    dist = site / "demo_pack-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-pack\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[graphgen.nodes]\ndemo = demo_pack\nbroken = demo_pack:nothing_here\n",
                                           encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    registry = default_registry(builtin=False, env=False)
    assert registry.get("Triple").pack == "demo"
    assert "demo-pack" in registry.packs["demo"].source
    assert any(p.pack == "broken" and p.kind == "import_failed" for p in registry.problems)
    sys.modules.pop("demo_pack", None)


def test_builtin_packs_load_without_problems():
    registry = default_registry(entry_points=False, env=False)
    assert not [p for p in registry.problems if p.kind == "import_failed"], registry.problems


def test_ambiguous_type_in_workflow_names_both_packs(tmp_path):
    registry = NodeRegistry()
    registry.register(Const, pack="one")
    registry.register(Const.spec(), pack="two")
    engine = Engine(registry=registry)
    with pytest.raises(WorkflowError) as info:
        engine.prepare({"1": {"class_type": "Const", "inputs": {}}})
    issue = info.value.issues[0]
    assert issue.code == "ambiguous_node_type" and "'one/Const'" in issue.hint and "'two/Const'" in issue.hint
