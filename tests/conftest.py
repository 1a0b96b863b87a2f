"""Test-wide settings.

The models in the tests are tiny: with more than one intra-op thread, torch spends far more time
synchronising threads than computing (50x slower on a busy 2-core machine), so use one.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
