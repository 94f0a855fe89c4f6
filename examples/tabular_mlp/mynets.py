"""The model: a small MLP for rows of features.

annealbench calls ``build(input_shape, num_classes)`` once per run; for tabular data
``input_shape`` is ``(features,)``. Refer to it as ``mynets:build`` (run from this folder,
or put it on PYTHONPATH, so worker processes can import it too).
"""

from torch import nn


def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    (features,) = input_shape
    # No BatchNorm or Dropout: plain layers let annealbench train several runs at once
    # (vectorized), and a run's result depends on its seed alone.
    return nn.Sequential(
        nn.Linear(features, 64),
        nn.ReLU(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, num_classes),
    )
