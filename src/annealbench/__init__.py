"""annealbench: learning-rate annealing for SGD, as a library and as a reproducible study.

``annealbench.schedules`` is pure Python/numpy and never imports torch; everything that
needs torch (``AnnealingLR``, the engine, the models) is imported lazily, so
``import annealbench.schedules`` works on a machine without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from annealbench.torch_scheduler import AnnealingLR

__all__ = ["AnnealingLR", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "AnnealingLR":
        from annealbench.torch_scheduler import AnnealingLR

        return AnnealingLR
    raise AttributeError(f"module 'annealbench' has no attribute {name!r}")
