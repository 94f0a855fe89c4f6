"""Test-wide settings.

Every test, and every ``annealbench`` subprocess a test starts, uses one CPU thread: the
2-core machines this suite runs on are shared, and OpenMP threads that spin while another
process holds the other core slow a run down many times over. One thread everywhere also
means runs compared bit for bit (in-process against a subprocess) use the same kernels.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
