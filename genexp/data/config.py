"""The data options' settings (conf/data) as schemas Hydra checks types against, one per shape of option,
and the rules a type cannot say.

A schema holds exactly the keys of the options that name it: a key it added would land in every composed
config, in the reference-statistics cache key (metrics/cache.py) and in checkpoints. Values live in the
yaml files; ``dataset`` stays an open mapping, built with its ``_target_``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from genexp.errors import UserError

KINDS = ("image", "points")


@dataclass
class DataConfig:
    """What every option has."""
    name: str = MISSING
    kind: str = MISSING
    num_classes: int = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING
    dataset: dict[str, Any] = MISSING


@dataclass
class PointsData(DataConfig):
    """Toy 2-D sets (ring, grid)."""
    dim: int = MISSING


@dataclass
class ImageData(DataConfig):
    resolution: int = MISSING
    channels: int = MISSING
    # Discrete pixel values for likelihood models (null: continuous).
    levels: int | None = MISSING


@dataclass
class EmbeddedImageData(ImageData):
    """Images shipped with a library (digits)."""
    split: str = MISSING


@dataclass
class ImageFilesData(EmbeddedImageData):
    """A published set's files in a root folder (CIFAR-10)."""
    root: str = MISSING


@dataclass
class DownloadableImageData(ImageFilesData):
    """Files fetched into root when missing (MNIST, Fashion-MNIST)."""
    download: bool = MISSING


@dataclass
class StackedMnistData(DownloadableImageData):
    num_samples: int = MISSING


@dataclass
class ImageFolderData(ImageData):
    """The user's own folder or zip (images, ffhq)."""
    path: str | None = MISSING
    use_labels: bool = MISSING
    mixed: str = MISSING


# The names the options' defaults lists use: /schema/data/<name>@_here_.
SCHEMAS = {
    "points": PointsData, "embedded_images": EmbeddedImageData, "image_files": ImageFilesData,
    "downloadable_images": DownloadableImageData, "stacked_mnist": StackedMnistData, "image_folder": ImageFolderData,
}


def check(data) -> None:
    """The data rules of one composed ``data`` node."""
    if str(data.kind) not in KINDS:
        raise UserError(f"data.kind={data.kind}: use {' or '.join(KINDS)}")
    if int(data.batch_size) < 1:
        raise UserError(f"data.batch_size={data.batch_size}: must be at least 1")
