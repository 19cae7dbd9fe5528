"""Shared test helpers."""

from __future__ import annotations

import os

# Plots in tests render off-screen.
os.environ.setdefault("MPLBACKEND", "Agg")
