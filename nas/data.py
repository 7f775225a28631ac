"""Datasets held in memory as tensors (no downloads): scikit-learn's 8x8 digits and CIFAR-10 from a local folder."""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from katibx.nas.settings import DATASETS

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
DIGITS_TEST = 297  # held out once (fixed seed), the rest is the training set


class DataError(ValueError):
    """A dataset that cannot be loaded; the message says what is missing and where."""


@dataclass
class Dataset:
    """Normalised images (N, C, H, W) float32 and int64 labels, train and test; ``augment`` = crop + flip."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: bool
    source: str  # where it was read from (MLflow's dataset source)

    @property
    def digest(self) -> str:
        """A short hash of the tensors as trained and tested on: the same data gives the same digest everywhere."""
        sha = hashlib.sha256()
        for tensor in (self.x_train, self.y_train, self.x_test, self.y_test):
            sha.update(tensor.contiguous().numpy())  # (its buffer: no copy)
        return sha.hexdigest()[:16]

    def lineage(self) -> dict[str, str]:
        """This dataset as an entry of a trial's ``datasets.json`` (its MLflow input)."""
        return {"name": self.name, "digest": self.digest, "source": self.source}

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    def split(self, portion: float, seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """The training set cut in two by a seeded permutation: ``portion`` for weights, the rest for alphas."""
        order = torch.randperm(len(self.y_train), generator=torch.Generator().manual_seed(seed))
        cut = int(round(portion * len(order)))
        a, b = order[:cut], order[cut:]
        return (self.x_train[a], self.y_train[a]), (self.x_train[b], self.y_train[b])


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits (shipped with the package): 1,500 train / 297 test, standardised."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    test, train = order[:DIGITS_TEST], order[DIGITS_TEST:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return Dataset("digits", x[train], y[train], x[test], y[test], 10, augment=False,
                   source="sklearn.datasets.load_digits")


def _cifar_folder(data_dir: Path) -> Path:
    for candidate in (data_dir, data_dir / "cifar-10-batches-py"):
        if all((candidate / f"data_batch_{i}").is_file() for i in range(1, 6)) and (candidate / "test_batch").is_file():
            return candidate
    raise DataError(
        f"CIFAR-10 not found under {data_dir}: expected data_batch_1..data_batch_5 and test_batch (the python "
        "version, cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extracted) in that folder "
        "or in its cifar-10-batches-py/; katibx never downloads it"
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return data, np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc})") from None


def load_cifar10(data_dir: str | Path) -> Dataset:
    """CIFAR-10 from the standard python-pickle files in ``data_dir`` (50,000 train / 10,000 test)."""
    folder = _cifar_folder(Path(data_dir).expanduser())
    parts = [_read_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = _read_batch(folder / "test_batch")
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

    def norm(a: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(a).float() / 255.0 - mean) / std

    x_train = norm(np.concatenate([p[0] for p in parts]))
    y_train = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return Dataset("cifar10", x_train, y_train, norm(x_test), torch.from_numpy(y_test), 10, augment=True,
                   source=str(folder.resolve()))


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """``digits`` or ``cifar10`` (which needs ``data_dir``)."""
    if name == "digits":
        return load_digits()
    if name == "cifar10":
        return load_cifar10(data_dir or "./data")
    raise DataError(f"dataset: {name!r} is not supported; use one of {', '.join(DATASETS)}")


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding and random horizontal flip, on the batch's device."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dev = x.device
    dy = torch.randint(0, 9, (n,), generator=generator).to(dev)
    dx = torch.randint(0, 9, (n,), generator=generator).to(dev)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    out = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    return torch.where(flip.to(x.device).view(n, 1, 1, 1), out.flip(3), out)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int | None, generator: torch.Generator,
            shuffle: bool = True, augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of tensors already on their device; a seeded shuffle each pass; None = one batch of all."""
    n = len(y)
    size = n if batch_size is None else batch_size
    order = torch.randperm(n, generator=generator).to(x.device) if shuffle else torch.arange(n, device=x.device)
    for start in range(0, n, size):
        index = order[start:start + size]
        xb = x[index]
        yield (augment_batch(xb, generator) if augment else xb), y[index]
