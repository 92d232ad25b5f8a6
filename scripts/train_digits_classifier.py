"""Train the digits classifier that genexp ships as its offline FID / IS / KID feature network.

    python scripts/train_digits_classifier.py            # writes genexp/assets/digits_lenet.pt

The 1,797 digits are split 75/25 (stratified, seed 0); the network trains on the 75%
with small shifts and rescalings (generated digits are not pixel-aligned), and its
accuracy on the held-out 25% is printed and stored beside the weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from genexp.data.digits import DigitsDataset
from genexp.metrics.classifiers import DigitsLeNet, save_classifier

ASSETS = Path(__file__).resolve().parents[1] / "genexp" / "assets"


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shift of up to 1 px and scale 0.9-1.1, as an affine warp."""
    n = len(x)
    scale = 0.9 + 0.2 * torch.rand(n, generator=g)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (2.0 / x.shape[-1])
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--out", type=Path, default=ASSETS / "digits_lenet.pt")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = DigitsDataset(resolution=16)
    idx = torch.arange(len(data))
    train_idx, test_idx = train_test_split(idx.numpy(), test_size=0.25, random_state=0, stratify=data.y.numpy())
    x_tr, y_tr = data.x[train_idx], data.y[train_idx]
    x_te, y_te = data.x[test_idx], data.y[test_idx]
    net = DigitsLeNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    for _epoch in range(args.epochs):
        net.train()
        for batch in torch.randperm(len(x_tr), generator=g).split(64):
            loss = F.cross_entropy(net(augment(x_tr[batch], g)), y_tr[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x_te).argmax(1) == y_te).float().mean().item()
        acc32 = (net(DigitsDataset(resolution=32).x[test_idx]).argmax(1) == y_te).float().mean().item()
    digest = save_classifier(net, args.out, {
        "held_out_accuracy": round(acc, 4), "held_out_accuracy_at_32px": round(acc32, 4), "train": len(x_tr),
        "held_out": len(x_te), "epochs": args.epochs, "command": "python scripts/train_digits_classifier.py"})
    print(f"held-out accuracy {acc:.4f} (16px), {acc32:.4f} (32px); {time.time() - t0:.0f}s; "
          f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB, sha256 {digest[:12]})")


if __name__ == "__main__":
    main()
