"""The FID Inception-v3 (TF graph 2015-12-05), in plain torch: no torchvision, no torch-fidelity.

It is the network of the original TF FID code, with the TF quirks FID numbers depend on: average
pools that leave padding out of the mean, a max pool in the last block's pool branch, batch-norm
eps 1e-3, 1008 classes, input (x - 128) / 128 from uint8 pixels. Parameter names follow
torch-fidelity's and pytorch-fid's weight files (``Mixed_5b.branch1x1.conv.weight`` ...), so
either file loads: weights-inception-2015-12-05-6726825d.pth (torch-fidelity, downloaded to torch
hub's cache) or pt_inception-2015-12-05-6726825d.pth (pytorch-fid).
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genexp.data.base import unit_to_uint8
from genexp.files import atomic_write
from genexp.metrics.resize import resize

INPUT_SIZE = 299
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"


class Conv(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3) -> relu; named conv / bn as in the weight files."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):  # 35x35
    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.branch1x1 = Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = Conv(cin, 48, 1), Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = Conv(64, 96, 3, padding=1), Conv(96, 96, 3, padding=1)
        self.branch_pool = Conv(cin, pool, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(tf_avg_pool(x))], 1)


class BlockB(nn.Module):  # 35 -> 17
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = Conv(64, 96, 3, padding=1), Conv(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):  # 17x17, factorised 7x7
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = Conv(cin, 192, 1)
        self.branch7x7_1 = Conv(cin, c7, 1)
        self.branch7x7_2 = Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = Conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = Conv(cin, c7, 1)
        self.branch7x7dbl_2 = Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = Conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(tf_avg_pool(x))], 1)


class BlockD(nn.Module):  # 17 -> 8
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = Conv(cin, 192, 1), Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = Conv(cin, 192, 1)
        self.branch7x7x3_2 = Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, 3, stride=2)

    def forward(self, x):
        d = x
        for i in range(1, 5):
            d = getattr(self, f"branch7x7x3_{i}")(d)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), d, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):  # 8x8, expanded filter banks
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool  # the TF graph's last block pools with max, not average
        self.branch1x1 = Conv(cin, 320, 1)
        self.branch3x3_1 = Conv(cin, 384, 1)
        self.branch3x3_2a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 448, 1), Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """uint8-valued float images (N, 3, 299, 299) -> pool features (N, 2048) and logits (N, 1008)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def pool_features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean((2, 3))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        # IS uses the logits without the fc bias ("logits_unbiased"), as the TF code and torch-fidelity do.
        return features @ self.fc.weight.T

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.pool_features(x)
        return f, self.logits(f)


def load_state(net: FIDInceptionV3, path: Path) -> None:
    """Load a weight file as checkpoints are read (weights_only); a file that is not this network's says
    which keys differ, in one line (extractors.WeightsError)."""
    from genexp.metrics.extractors import check_state_dict, read_state_dict

    state = read_state_dict(path)
    # Files from torchvision-based converters carry batch counters and the auxiliary head: not used here.
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked") and not k.startswith("AuxLogits")}
    check_state_dict(state, net, path, "an FID Inception-v3 state dict",
                     ignore=lambda key: key.endswith("num_batches_tracked"))
    net.load_state_dict(state, strict=False)


def default_weights_path() -> Path:
    """Where torch-fidelity / torchmetrics keep their download: an existing copy is reused."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Streamed into a temporary file beside ``dest`` and renamed (genexp/files.py), so an interrupted
    download leaves nothing."""
    def fetch(out):
        with urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)

    atomic_write(dest, fetch, shared=True)


class InceptionFeatures(nn.Module):
    """Images in [-1, 1] at any size and 1 or 3 channels -> Inception pool features or IS logits.

    Pixels are quantised to uint8 first, as every FID implementation sees saved images, then
    resized to 299 with ``resize_filter``."""

    def __init__(self, net: FIDInceptionV3, output: str, resize_filter: str):
        super().__init__()
        self.net, self.output, self.resize_filter = net.eval().requires_grad_(False), output, resize_filter
        self.sizes = {"features": 2048, "logits": 1008}
        self.num_features = self.sizes[output]

    @torch.no_grad()
    def extract(self, x: torch.Tensor, outputs) -> dict[str, torch.Tensor]:
        """The ``outputs`` wanted (features, logits) from one pass through the network."""
        x = unit_to_uint8(x).float()
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = resize(x, INPUT_SIZE, self.resize_filter)
        features = self.net.pool_features(x)
        return {o: features if o == "features" else self.net.logits(features) for o in outputs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extract(x, (self.output,))[self.output]
