"""Test, demo and benchmark helpers that live outside the node packs (the demo and its data)."""
