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


class Cifar10CNN5(nn.Module):
    """The CIFAR-10 CNN of the graph-view notebook (its model file ``CIFAR-10_CNN5.h5``), for 3×32×32.

    conv 3→32 (3×3, valid), ReLU, max-pool 2, conv 32→64 (3×3), ReLU, max-pool 2,
    conv 64→64 (3×3), ReLU, flatten, dropout, linear 1024→64, ReLU, linear 64→10:
    122,570 parameters. Modules carry the notebook's Keras layer names (``conv_0``,
    ``max_pooling2d``, ``conv_1``, ``max_pooling2d_1``, ``conv_2``, ``flatten``,
    ``dropout``, ``dense_0``, ``dense_1``), so the ``merged`` granularity has its layers
    and node offsets: 53,290 neurons.

    ``flatten`` is channel-first (C, H, W), as everywhere in PyTorch and as the notebook
    numbers its convolution neurons; the notebook's Keras ``Flatten`` is channels-last, so
    in its graph the edges into ``dense_0`` leave other ``conv_2`` neurons (all but 4 of
    1,024) than the ones the model reads. Keras weights therefore load only after permuting
    ``dense_0``'s input axis from (H, W, C) to (C, H, W).

    Parameters
    ----------
    dropout : float
        Dropout probability before ``dense_0`` (identity in eval mode; the notebook does not
        show its rate).
    """

    input_shape = (3, 32, 32)

    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(3, 32, kernel_size=3)
        self.relu_0 = nn.ReLU()
        self.max_pooling2d = nn.MaxPool2d(2)
        self.conv_1 = nn.Conv2d(32, 64, kernel_size=3)
        self.relu_1 = nn.ReLU()
        self.max_pooling2d_1 = nn.MaxPool2d(2)
        self.conv_2 = nn.Conv2d(64, 64, kernel_size=3)
        self.relu_2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.dense_0 = nn.Linear(1024, 64)
        self.relu_3 = nn.ReLU()
        self.dense_1 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a ``(batch, 3, 32, 32)`` input."""
        for child in self.children():
            x = child(x)
        return x


# ---------------------------------------------------------------------------------------------
# ImageNet-style architectures (VGG-11, ResNet-18, MobileNetV2)
#
# Written for this package after torchvision's definitions (``torchvision/models/vgg.py``,
# ``resnet.py``, ``mobilenetv2.py``, ``ops/misc.py``): at the default widths the module tree
# (``named_modules``) and every ``state_dict`` key and shape are torchvision's, at every input
# size, so torchvision's published weights load (strict) as ``weights`` and the ``children``
# granularity has torchvision's layers. Two differences that change no value: the ReLUs are not
# in place (torchvision's ``inplace=True`` would make the recorder copy each overwritten layer),
# and the residual sums are out of place. Every forward is free of data-dependent control flow
# (``torch.fx`` traceable, granularity ``ops``).


def _scaled(channels: int, width: int, reference: int = 64) -> int:
    """``channels * width / reference``, at least 1."""
    return max(1, channels * width // reference)


def _check_positive(**values: int | float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


VGG11_CONFIG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
"""Configuration "A" of Simonyan & Zisserman (2015): 3×3 convolution widths, ``"M"`` = max-pool 2."""

VGG11_POOLED = 7
"""Height and width of VGG's adaptive average pooling (torchvision's ``AdaptiveAvgPool2d((7, 7))``)."""


class VGG11(nn.Module):
    """VGG-11 (configuration "A" of Simonyan & Zisserman, *Very deep convolutional networks*).

    Eight 3×3 convolutions (padding 1) with ReLU and five 2×2 max-pools, widths
    ``[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M]`` scaled by ``width / 64``,
    then adaptive average pooling to 7×7 whatever the input size (as torchvision's ``VGG``:
    at 32×32 the 1×1 map is repeated 49 times), flatten, and
    Linear-ReLU-Dropout-Linear-ReLU-Dropout-Linear, the first reading ``channels × 7 × 7``
    values (25,088 at the defaults). At the defaults it has 132,863,336 parameters and
    torchvision's ``vgg11`` module tree and ``state_dict``. Inputs must be at least 32×32
    (five halvings).

    Parameters
    ----------
    num_classes : int
        Output size.
    in_channels : int
        Input channels.
    width : int
        Channels of the first convolution (64 in the paper); all convolutions scale with it.
    input_size : int
        Height and width of the inputs (``input_shape``); the parameters do not depend on it.
    classifier_width : int
        Width of the two hidden linear layers (4096 in the paper).
    dropout : float
        Dropout probability of the classifier (identity in eval mode).
    """

    input_shape = (3, 224, 224)  # of the defaults; instances store their own

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width: int = 64,
        input_size: int = 224,
        classifier_width: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        _check_positive(
            num_classes=num_classes, in_channels=in_channels, width=width, classifier_width=classifier_width
        )
        if input_size < 32:
            raise ValueError(f"VGG11 needs inputs of at least 32×32 (five max-pools), got {input_size}")
        self.input_shape = (in_channels, input_size, input_size)
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG11_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out = _scaled(int(item), width)
                layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU()]
                channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((VGG11_POOLED, VGG11_POOLED))
        self.classifier = nn.Sequential(
            nn.Linear(channels * VGG11_POOLED * VGG11_POOLED, classifier_width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(classifier_width, classifier_width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(classifier_width, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a ``(batch, *input_shape)`` input."""
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    """The two-convolution residual block of ResNet-18/34 (He et al., 2016), as torchvision's.

    conv 3×3 (``stride``) - BN - ReLU - conv 3×3 - BN, plus the shortcut (identity, or
    ``downsample``: a 1×1 convolution with ``stride`` and BN when the shape changes), then the
    same ReLU module again. Children: ``conv1``, ``bn1``, ``relu``, ``conv2``, ``bn2`` and
    ``downsample`` where there is one (torchvision's names and order).
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output (``downsample`` is fixed at construction, so this traces with fx)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (He et al., *Deep residual learning for image recognition*).

    conv 7×7/2 (padding 3) - BN - ReLU - max-pool 3×3/2 (padding 1), four stages of two
    :class:`BasicBlock` with widths ``width × (1, 2, 4, 8)`` (stride 2 and a 1×1
    convolution + BN shortcut at the first block of stages 2-4), adaptive average pooling
    to 1×1, flatten, linear. At the defaults it has 11,689,512 parameters and torchvision's
    ``resnet18`` module tree and ``state_dict``.

    Parameters
    ----------
    num_classes : int
        Output size.
    in_channels : int
        Input channels.
    width : int
        Channels of the stem and the first stage (64 in the paper).
    input_size : int
        Height and width of the inputs (``input_shape``); any size works.
    """

    input_shape = (3, 224, 224)  # of the defaults; instances store their own

    def __init__(
        self, num_classes: int = 1000, in_channels: int = 3, width: int = 64, input_size: int = 224
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, in_channels=in_channels, width=width, input_size=input_size)
        self.input_shape = (in_channels, input_size, input_size)
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = width
        stages = []
        for index, multiplier in enumerate((1, 2, 4, 8)):
            out, stride = width * multiplier, 1 if index == 0 else 2
            stages.append(nn.Sequential(BasicBlock(channels, out, stride), BasicBlock(out, out)))
            channels = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a ``(batch, *input_shape)`` input."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def round_channels(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (at least ``divisor``), as MobileNets do.

    Rounds to the nearest multiple, and goes one multiple up if that lost more than 10 %.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class Conv2dNormActivation(nn.Sequential):
    """Convolution (no bias, "same" padding for odd kernels) - BatchNorm - activation.

    torchvision's ``Conv2dNormActivation`` with its defaults: the children are ``0``
    (convolution), ``1`` (BatchNorm) and ``2`` (activation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] = nn.ReLU6,
    ) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            activation(),
        )


class InvertedResidual(nn.Module):
    """The MobileNetV2 block: 1×1 expansion (skipped when ``expand_ratio == 1``) - ReLU6,
    depthwise 3×3 (``stride``) - ReLU6, linear 1×1 projection, each with BN; the input is
    added when ``stride == 1`` and the channel count is unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(in_channels, hidden, kernel_size=1))
        layers += [
            Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output (``use_residual`` is fixed at construction, so this traces with fx)."""
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


MOBILENET_V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""Inverted-residual stages of Sandler et al. (2018): expansion t, channels c, repeats n, stride s."""


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., *MobileNetV2: inverted residuals and linear bottlenecks*).

    conv 3×3/2 to 32 channels - BN - ReLU6, the 17 :class:`InvertedResidual` blocks of
    :data:`MOBILENET_V2_SETTING`, a 1×1 convolution to ``last_channel`` - BN - ReLU6 (all
    in ``features``), global average pooling (a function in ``forward``, not a child, as in
    torchvision), flatten, then ``classifier``: dropout, linear. Channel counts are
    ``width_mult`` times the paper's, rounded with :func:`round_channels`. As in the paper
    the last convolution is not thinned for ``width_mult < 1``: it keeps 1280 channels
    (``1280 × width_mult`` for ``width_mult > 1``). At the defaults it has 3,504,872
    parameters and torchvision's ``mobilenet_v2`` module tree and ``state_dict``.

    Parameters
    ----------
    num_classes : int
        Output size.
    in_channels : int
        Input channels.
    width_mult : float
        Width multiplier of every layer.
    input_size : int
        Height and width of the inputs (``input_shape``); any size works.
    last_channel : int, optional
        Channels of the last convolution instead of the paper's rule (for small test models).
    round_nearest : int
        Channel counts are multiples of this (8 in the paper; 1 turns rounding into plain
        rounding to an integer, for small test models).
    dropout : float
        Dropout probability before the classifier (identity in eval mode).
    """

    input_shape = (3, 224, 224)  # of the defaults; instances store their own

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        input_size: int = 224,
        last_channel: int | None = None,
        round_nearest: int = 8,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        _check_positive(
            num_classes=num_classes,
            in_channels=in_channels,
            width_mult=width_mult,
            input_size=input_size,
            round_nearest=round_nearest,
        )
        self.input_shape = (in_channels, input_size, input_size)
        channels = round_channels(32 * width_mult, round_nearest)
        if last_channel is None:
            last_channel = round_channels(1280 * max(1.0, width_mult), round_nearest)
        _check_positive(last_channel=last_channel)
        self.last_channel = last_channel
        layers: list[nn.Module] = [Conv2dNormActivation(in_channels, channels, stride=2)]
        for t, c, n, s in MOBILENET_V2_SETTING:
            out = round_channels(c * width_mult, round_nearest)
            for index in range(n):
                layers.append(InvertedResidual(channels, out, s if index == 0 else 1, t))
                channels = out
        layers.append(Conv2dNormActivation(channels, last_channel, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channel, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a ``(batch, *input_shape)`` input."""
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "cifar10_cnn5": Cifar10CNN5,
    "digits_cnn": DigitsCNN,
    "mnist_tutorial": MnistTutorialNet,
    "mobilenet_v2": MobileNetV2,
    "resnet18": ResNet18,
    "vgg11": VGG11,
}
"""Built-in architectures by the name model entries use (``architecture: digits_cnn``)."""
