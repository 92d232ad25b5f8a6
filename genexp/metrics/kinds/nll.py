"""Held-out negative log-likelihood in nats and bits per dimension, from the model's own estimate."""

from __future__ import annotations

import torch

from genexp.metrics.likelihood import held_out, mean_nll, nll_results
from genexp.metrics.registry import MIN, Context, MetricKind, count_label, register


class HeldOut(MetricKind):
    """Scores a split of the data through a model hook, not samples."""

    data_kinds = None
    needs_model = True
    hook = ""
    why = ""

    def __init__(self, name: str, cfg, ctx: Context):
        super().__init__(name, cfg, ctx)
        self.dataset, split = held_out(ctx.data_cfg, cfg.get("split"), ctx.dataset)
        n = min(int(ctx.num_samples or cfg.get("num_samples") or len(self.dataset)), len(self.dataset))
        self.label = split if n == len(self.dataset) else f"{split}:{count_label(n)}"
        self.num_samples, self.key = n, f"{self.kind}@{self.label}"
        self.protocol = {"split": split, "examples": n, "batch_size": int(cfg.get("batch_size", 100))}

    def unfit(self, model) -> str | None:
        if model is not None and hasattr(model[0], self.hook):
            return None
        what = type(model[0]).__name__ if model is not None else "generated images"
        return f"{self.why}; {what} has none"


@register
class NLL(HeldOut):
    kind = "nll"
    directions = {"nll/": MIN, "bpd/": MIN}
    hook = "nll"
    why = "it needs a model with a likelihood (a VAE, flow or autoregressive model)"

    def __init__(self, name: str, cfg, ctx: Context):
        super().__init__(name, cfg, ctx)
        self.protocol.update(iwae_samples=int(cfg.get("iwae_samples", 1000)), levels=ctx.data_cfg.get("levels"))

    def keys(self) -> list[str]:
        return []  # named after the model's estimates (elbo, iwae, exact), known once it has run

    def evaluate(self, model, seed: int) -> dict[str, float]:
        p = self.protocol
        means = mean_nll(model[0], self.dataset, self.num_samples, p["batch_size"], self.ctx.device,
                         iwae_samples=p["iwae_samples"])
        dims = int(torch.as_tensor(self.dataset[0][0]).numel())
        return nll_results(means, self.label, dims)
