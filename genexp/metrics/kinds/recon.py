"""Reconstruction of held-out images through a model's encoder: pixel MSE, and LPIPS where its weights are."""

from __future__ import annotations

from genexp.metrics import lpips_net
from genexp.metrics.extractors import MetricUnavailable, WeightsError
from genexp.metrics.kinds.nll import HeldOut
from genexp.metrics.likelihood import reconstruction
from genexp.metrics.registry import MIN, Context, register


@register
class Recon(HeldOut):
    kind = "recon"
    directions = {"recon/": MIN}
    hook = "reconstruct"
    why = "it needs a model with an encoder (BiGAN, O-GAN, VAE, VQ-VAE)"

    def __init__(self, name: str, cfg, ctx: Context):
        super().__init__(name, cfg, ctx)
        net, self.lpips = cfg.get("net", "alex"), None
        if ctx.data_cfg.get("kind", "image") != "image":
            return
        try:
            self.lpips = lpips_net.lpips_metric(net, cfg.get("weights"), bool(cfg.get("download", True)),
                                                f"metrics.{name}.weights").to(ctx.device)
        except WeightsError:
            raise
        except MetricUnavailable as exc:
            ctx.note(f"metric {name}: LPIPS left out, pixel MSE only: {exc}")
            return
        seen = self.lpips.net.seen_size(int(ctx.data_cfg.get("resolution") or ctx.example().shape[-1]))
        self.protocol["lpips"] = f"{net}-{seen}px" if seen else net  # resized images: other numbers, another key

    def keys(self) -> list[str]:
        return [f"recon/mse@{self.label}"] + ([f"recon/lpips_{self.protocol['lpips']}@{self.label}"]
                                              if self.lpips is not None else [])

    def evaluate(self, model, seed: int) -> dict[str, float]:
        p = self.protocol
        scores = reconstruction(model[0], self.dataset, self.num_samples, p["batch_size"], self.ctx.device,
                                self.lpips)
        out = {f"recon/mse@{self.label}": scores["mse"]}
        if "lpips" in scores:
            out[f"recon/lpips_{p['lpips']}@{self.label}"] = scores["lpips"]
        return out
