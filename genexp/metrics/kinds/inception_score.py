"""Inception Score exp(E_x KL(p(y|x) || p(y))) over an extractor's class logits, in float64 log space.

torchmetrics' InceptionScore multiplies float32 probabilities by their logs: a class with
probability exactly 0 gives 0 * -inf = NaN. Here log p(y|x) is a float64 log-softmax, log p(y) a
logsumexp, and a term whose probability underflows counts 0; the splits and their random order are
torchmetrics' (the same draws from torch's global RNG), so values agree with it wherever it is finite.
"""

from __future__ import annotations

import math

import torch

from genexp.metrics.featured import TorchmetricsKind, build_features, feature_key
from genexp.metrics.registry import MAX, Context, register, std_key


def inception_score(logits: torch.Tensor, splits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) over ``splits`` chunks of ``logits`` (in the order given)."""
    log_p = logits.double().log_softmax(dim=1)
    scores = []
    for chunk in log_p.chunk(splits, dim=0):
        log_py = chunk.logsumexp(dim=0) - math.log(len(chunk))
        p = chunk.exp()
        kl = torch.where(p > 0, p * (chunk - log_py), torch.zeros_like(p)).sum(dim=1)
        scores.append(kl.mean().exp())
    score = torch.stack(scores)
    # One split has no spread (torch would warn and give NaN all the same).
    return score.mean(), score.std() if len(score) > 1 else torch.tensor(math.nan, dtype=score.dtype)


def float64_inception_score(feature, splits: int):
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.utilities.data import dim_zero_cat

    class Float64InceptionScore(InceptionScore):
        def compute(self):
            logits = dim_zero_cat(self.features)
            return inception_score(logits[torch.randperm(logits.shape[0])], self.splits)

    return Float64InceptionScore(feature=feature, splits=splits)


@register
class IS(TorchmetricsKind):
    kind = "is"
    directions = {"is/": MAX}

    def __init__(self, name: str, cfg, ctx: Context):
        super().__init__(name, cfg, ctx)
        n = int(ctx.num_samples or cfg.num_samples)
        module, ident = build_features(cfg, ctx, "logits")
        self.num_samples, self.key = n, feature_key("is", ident, n)
        splits = min(int(cfg.splits), n)
        self.protocol = {"extractor": ident, "num_fake": n, "splits": splits}
        self.metric = float64_inception_score(module, splits).to(ctx.device)

    def update_fake(self, x: torch.Tensor, start: int, batch: int) -> None:
        self.metric.update(x)

    def keys(self) -> list[str]:
        return [self.key, std_key(self.key)]

    def compute(self) -> dict[str, float]:
        mean, std = self.metric.compute()
        return {self.key: float(mean), std_key(self.key): float(std)}
