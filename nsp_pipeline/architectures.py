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

    input_shape = (1, 28, 28)

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


class DigitsCNN(nn.Module):
    """A small CNN for the 1×8×8 digits of scikit-learn's ``load_digits``.

    conv 1→8 (3×3, padding 1), ReLU, max-pool 2, conv 8→16 (3×3, padding 1), ReLU,
    max-pool 2, flatten, linear 64→10. Every step is a direct child, so the ``children``
    granularity records all of them: 1,866 neurons in total.
    """

    input_shape = (1, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a ``(batch, 1, 8, 8)`` input."""
        for child in self.children():
            x = child(x)
        return x


ARCHITECTURES: dict[str, type[nn.Module]] = {"digits_cnn": DigitsCNN, "mnist_tutorial": MnistTutorialNet}
"""Built-in architectures by the name model entries use (``architecture: digits_cnn``)."""
