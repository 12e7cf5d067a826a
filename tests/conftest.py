"""Shared test networks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn


class SeedNet(nn.Module):
    """The example network of the ``nsp`` README (functional sigmoids, view before fc1)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=2, kernel_size=2)
        self.conv2 = nn.Conv2d(in_channels=2, out_channels=8, kernel_size=2)
        self.fc1 = nn.Linear(1 * 4 * 8, 8)

    def forward(self, x):
        x = torch.sigmoid(self.conv1(x))
        x = torch.sigmoid(self.conv2(x))
        x = x.view(-1, 1 * 4 * 8)
        return self.fc1(x)


SEED_IMAGE = [[[[-6, -1, -2, 5], [-3, -6, 5, 4], [2, 5, -6, 3], [5, 0, 1, -6]]]]


class SmallResNet(nn.Module):
    """A tiny residual network with functional ops, for the 'ops' granularity."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 3, 3, padding=1)
        self.branch = nn.Conv2d(3, 3, 3, padding=2, dilation=2, groups=3)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.head = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + torch.sigmoid(self.branch(x))
        x = self.pool(x)
        return self.head(torch.flatten(x, 1))


@pytest.fixture
def seed_net():
    torch.manual_seed(0)
    return SeedNet()


@pytest.fixture
def seed_image():
    return torch.tensor(SEED_IMAGE, dtype=torch.float)


@pytest.fixture
def small_resnet():
    torch.manual_seed(1)
    return SmallResNet()
