"""Train the MNIST classifier that genexp ships: the offline FID / IS / KID feature network for
MNIST-like data, and the per-channel labeller of the Stacked MNIST mode count.

    python scripts/train_mnist_classifier.py --root ../shared/data/mnist   # writes genexp/assets/mnist_lenet.pt

Trains on the 60,000 training digits with shifts of up to 2 px, reports accuracy on the
10,000 test digits (stored beside the weights; the goal is >= 99%).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from genexp.data.idx import IdxDataset
from genexp.metrics.classifiers import MnistLeNet, save_classifier

ASSETS = Path(__file__).resolve().parents[1] / "genexp" / "assets"


def shift(x: torch.Tensor, g: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Random integer shifts (zero fill is -1, the background), one per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, [pixels] * 4, value=-1.0)
    dy = torch.randint(0, 2 * pixels + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pixels + 1, (n,), generator=g)
    rows = (torch.arange(h)[None] + dy[:, None])[:, :, None]
    cols = (torch.arange(w)[None] + dx[:, None])[:, None, :]
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ASSETS / "mnist_lenet.pt")
    args = ap.parse_args()
    torch.manual_seed(0)
    train = IdxDataset(args.root, "mnist", "train", resolution=28, download=False)
    test = IdxDataset(args.root, "mnist", "test", resolution=28, download=False)
    net = MnistLeNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps = args.epochs * (len(train) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    for _epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(train), generator=g)
        for batch in order[: len(order) // 128 * 128].split(128):
            loss = F.cross_entropy(net(shift(train.x[batch], g)), train.y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(chunk).argmax(1) for chunk in test.x.split(1000)])
    acc = (pred == test.y).float().mean().item()
    digest = save_classifier(net, args.out, {
        "test_accuracy": round(acc, 4), "train": len(train), "test": len(test), "epochs": args.epochs,
        "command": "python scripts/train_mnist_classifier.py --root <mnist idx dir>"})
    print(f"MNIST test accuracy {acc:.4f}; {time.time() - t0:.0f}s; wrote {args.out} "
          f"({args.out.stat().st_size // 1024} KiB, sha256 {digest[:12]})")


if __name__ == "__main__":
    main()
