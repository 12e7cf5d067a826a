"""Built-in network architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MnistTutorialNet(nn.Module):
    """The MNIST network of the ``nsp`` tutorial, for 1×28×28 inputs.

    conv 1→10 (5×5), max-pool 2, conv 10→20 (5×5), max-pool 2, linear 320→10, with
    functional ReLUs. Its neuron graph (``children`` granularity) has 9,594 nodes and
    474,240 edges.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc = nn.Linear(320, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a ``(batch, 1, 28, 28)`` input."""
        x = F.relu(self.pool1(self.conv1(x)))
        x = F.relu(self.pool2(self.conv2(x)))
        return self.fc(x.view(x.size(0), -1))
