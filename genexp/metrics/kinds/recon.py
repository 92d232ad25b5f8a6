"""Reconstruction of held-out images through a model's encoder: pixel MSE, and LPIPS where it runs."""

from __future__ import annotations

from genexp.metrics import lpips_net
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
        try:
            self.lpips = lpips_net.lpips_metric(net).to(ctx.device)
            self.protocol["lpips"] = net
        except Exception as exc:
            ctx.note(f"metric recon: LPIPS left out, pixel MSE only (LPIPS needs torchvision and its {net} "
                     f"weights, {type(exc).__name__}): pip install 'genexp[gpu]' where torchvision matches torch")

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
