"""`agentprobe diff`: where two runs first diverge, why, and what followed from it."""

from __future__ import annotations

from .compare import CLASSES, Divergence, diff_runs

__all__ = ["CLASSES", "Divergence", "diff_runs"]
