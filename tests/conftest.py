"""Shared pytest configuration: offline hub, and the session-scoped tiny Kolors models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
from fixtures_kolors import *  # noqa: E402,F401,F403
