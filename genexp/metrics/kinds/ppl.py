"""Perceptual path length (StyleGAN) of a generator's latent space (metrics/ppl.py)."""

from __future__ import annotations

import torch

from genexp.metrics.extractors import MetricUnavailable, build_extractor, resolve_name
from genexp.metrics.registry import MIN, Context, MetricKind, count_label, register, std_key


@register
class PPL(MetricKind):
    kind = "ppl"
    needs_model = True
    directions = {"ppl_": MIN}

    def __init__(self, name: str, cfg, ctx: Context):
        from genexp.metrics import lpips_net
        from genexp.metrics.ppl import LPIPS_NETS, FeatureDistance

        super().__init__(name, cfg, ctx)
        n = int(ctx.num_samples or cfg.num_samples)
        sim = cfg.get("sim", "vgg")
        if isinstance(sim, str) and sim in LPIPS_NETS:
            # plain-torch LPIPS (metrics/lpips_net.py): a missing backbone file is one line, MetricUnavailable
            net = lpips_net.build_lpips(sim, cfg.get("weights"), bool(cfg.get("download", True)),
                                        "metrics.ppl.weights", size=cfg.get("lpips_resize"))
            ident = {"name": f"lpips_{sim}", "resize": cfg.get("lpips_resize")}
        else:
            module, ident = build_extractor(resolve_name(sim, ctx.data_cfg.name), "features", cfg.get("weights"),
                                            cfg.get("resize"), bool(cfg.get("download", True)), ctx.example())
            net = FeatureDistance(module)
        space, sampling = str(cfg.get("space", "z")), str(cfg.get("sampling", "end"))
        interpolation = str(cfg.get("interpolation") or ("slerp" if space == "z" else "lerp"))
        if space not in ("z", "w") or sampling not in ("end", "full") or interpolation not in ("lerp", "slerp"):
            raise MetricUnavailable(f"metrics.ppl space={space} sampling={sampling} interpolation={interpolation}: "
                                    "use space z|w, sampling end|full, interpolation lerp|slerp")
        self.protocol = {"paths": n, "distance": ident, "epsilon": float(cfg.epsilon), "space": space,
                         "sampling": sampling, "interpolation": interpolation, "crop": bool(cfg.get("crop", False)),
                         "discard": [float(cfg.lower_discard), float(cfg.upper_discard)]}
        self.key = f"ppl_{space}{'end' if sampling == 'end' else 'full'}/{ident['name']}@{count_label(n)}"
        self.num_samples, self.net = n, net.to(ctx.device)

    def keys(self) -> list[str]:
        return [self.key, std_key(self.key)]

    def unfit(self, model) -> str | None:
        if model is None or not hasattr(model[0], "latents"):
            return "it walks a generator's latent space: evaluate a checkpoint, not images"
        return None

    def evaluate(self, model, seed: int) -> dict[str, float]:
        from genexp.metrics.ppl import path_length

        p = self.protocol
        try:
            mean, std = path_length(model[0], model[1], self.net, self.num_samples, p["epsilon"],
                                    p["interpolation"], p["discard"][0], p["discard"][1],
                                    torch.Generator().manual_seed(seed + 1), self.ctx.device, p["space"],
                                    p["sampling"], p["crop"])
        except ValueError as exc:  # e.g. w space on a generator without one
            raise MetricUnavailable(str(exc)) from None
        return {self.key: mean, std_key(self.key): std}
