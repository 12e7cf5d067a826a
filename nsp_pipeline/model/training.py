"""Deterministic CPU training of classifiers (Adam, cross-entropy) and their accuracy."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.progress import progress
from nsp_pipeline.data.loading import Dataset

#: Recipe that trains :class:`~nsp_pipeline.model.architectures.DigitsCNN` to ≥ 95 % on the digits
#: test split: the configuration's defaults of a model's ``train`` section.
DEFAULT_TRAINING = default("models.*.train")

logger = logging.getLogger(__name__)


def train_classifier(
    model: nn.Module,
    train: Dataset,
    test: Dataset | None = None,
    epochs: int = DEFAULT_TRAINING["epochs"],
    learning_rate: float = DEFAULT_TRAINING["learning_rate"],
    batch_size: int = DEFAULT_TRAINING["batch_size"],
    seed: int = DEFAULT_TRAINING["seed"],
) -> dict:
    """Train a classifier in place, bit-reproducibly.

    The run seeds torch (the global generator is restored afterwards), shuffles with its own
    ``torch.Generator``, and uses deterministic algorithms on one thread, so the same model,
    data and arguments always give the same weights on the same machine.

    Parameters
    ----------
    model : nn.Module
        Classifier mapping ``(batch, *shape)`` inputs to ``(batch, n_classes)`` scores.
    train : Dataset
        Training samples; every label must be known (``>= 0``).
    test : Dataset, optional
        Samples whose accuracy is logged after each epoch and returned.
    epochs, learning_rate, batch_size, seed
        Number of passes over ``train``, Adam's step size, samples per step, random seed.

    Returns
    -------
    dict
        ``train_loss`` (mean per epoch), ``train_accuracy``, ``test_accuracy`` (None without
        ``test``), ``seconds``, and the arguments ``epochs``, ``learning_rate``, ``batch_size``,
        ``seed``.

    Raises
    ------
    ValueError
        If an argument is out of range or a training label is unknown or too large.
    """
    if epochs < 1 or batch_size < 1 or learning_rate <= 0:
        raise ValueError(
            f"training: epochs={epochs}, batch_size={batch_size}, learning_rate={learning_rate}; "
            "expected positive values"
        )
    if len(train) == 0:
        raise ValueError(f"training dataset {train.name!r} is empty")
    labels = torch.as_tensor(train.labels)
    start = time.perf_counter()
    losses = []
    with _deterministic(seed):
        n_classes = _n_classes(model, train)
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(
                f"training dataset {train.name!r}: labels span [{labels.min()}, {labels.max()}]; "
                f"expected known labels in [0, {n_classes - 1}] for the model's {n_classes} outputs"
            )
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        was_training = model.training
        for epoch in progress(range(1, epochs + 1), "training", unit="epoch"):
            model.train()
            total = 0.0
            for batch in torch.randperm(len(train), generator=generator).split(batch_size):
                optimizer.zero_grad()
                loss = F.cross_entropy(model(train.inputs[batch]), labels[batch])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            losses.append(total / len(train))
            test_accuracy = accuracy(model, test) if test is not None else None
            logger.info(
                "epoch %d/%d: train loss %.4f%s",
                epoch,
                epochs,
                losses[-1],
                "" if test_accuracy is None else f", test accuracy {test_accuracy:.4f}",
            )
        model.train(was_training)
    return {
        "train_loss": losses,
        "train_accuracy": accuracy(model, train),
        "test_accuracy": test_accuracy,
        "seconds": time.perf_counter() - start,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "seed": seed,
    }


def accuracy(model: nn.Module, data: Dataset, batch_size: int = 512) -> float | None:
    """Fraction of the labelled samples of ``data`` the model classifies correctly.

    Parameters
    ----------
    model : nn.Module
        Classifier; run in eval mode (its mode is restored afterwards).
    data : Dataset
        Samples; those with label ``-1`` are skipped.
    batch_size : int
        Samples per forward pass.

    Returns
    -------
    float or None
        Accuracy in [0, 1], or None if no sample is labelled.
    """
    known = torch.as_tensor(data.labels >= 0)
    if not known.any():
        return None
    was_training = model.training
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(batch).argmax(1) for batch in data.inputs[known].split(batch_size)])
    model.train(was_training)
    return float((predicted == torch.as_tensor(data.labels)[known]).double().mean())


def _n_classes(model: nn.Module, data: Dataset) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        scores = model(data.inputs[:1])
    model.train(was_training)
    if scores.ndim != 2:
        raise ValueError(
            f"training: the model maps {tuple(data.inputs[:1].shape)} inputs to {tuple(scores.shape)}; "
            "expected (batch, n_classes) scores"
        )
    return scores.shape[1]


@contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed torch, one thread, deterministic algorithms; restore all of it on exit."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.set_num_threads(threads)
