"""Shared test settings: hypothesis profile (no deadline: CI machines are shared and noisy)."""

from __future__ import annotations

import os

import torch
from hypothesis import settings

# Tests use small tensors: one intra-op thread avoids oversubscribing the shared 2-core machines
# (measured 10-35x slower small solves with two contending threads under load).
torch.set_num_threads(1)

settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
