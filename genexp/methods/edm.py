"""EDM (Karras et al. 2022): a denoiser D(x; sigma) trained on noised images, sampled by integrating the
probability-flow ODE from sigma_max to 0 (models/edm/: the preconditioning and losses, the SongUNet
nets, the samplers).

The training recipe of EDM's train.py: Adam, the lr ramped up linearly over ``optim.lr_rampup_kimg``
thousand images (10,000 on CIFAR-10), an EMA of the denoiser with a half-life of ``ema_kimg`` thousand
images (500), shortened to ``ema_rampup`` times the images seen so far (0.05) early in training. The
loss is summed over pixels and averaged over the batch, as EDM's loop does, so its lr carries over.
Not here: EDM's augmentation pipe (train.py's --augment, its labels conditioning the net) and the
clamping of non-finite gradients (genexp's trainer.on_nan decides about those).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from functools import partial

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genexp import distributed
from genexp.errors import UserError
from genexp.methods.base import Batch, Method
from genexp.methods.ema import half_life_beta, update_ema
from genexp.models.edm import precond as preconds
from genexp.models.edm import sampler as samplers
from genexp.optim.build import build_optimizer


class EDM(Method):
    def __init__(self, model: DictConfig, loss: DictConfig, optim: DictConfig, ema_kimg: float = 500.0,
                 ema_rampup: float | None = 0.05, sample_batch: int = 256):
        super().__init__()
        self.num_classes = int(model.get("num_classes", 0) or 0)
        self.shape = (int(model.channels), int(model.resolution), int(model.resolution))
        levels = len(model.net.get("channel_mult", [1, 2, 2, 2]))
        if int(model.resolution) % (2 ** (levels - 1)):
            raise UserError(f"model.resolution={model.resolution} does not halve {levels - 1} times "
                            f"(model.net.channel_mult has {levels} levels): use fewer levels or another resolution")
        for key, allowed in (("embedding_type", ("positional", "fourier")), ("decoder_type", ("standard", "skip")),
                             ("encoder_type", ("standard", "skip", "residual"))):
            if model.net.get(key) is not None and model.net[key] not in allowed:
                raise UserError(f"model.net.{key}={model.net[key]}: use one of {', '.join(allowed)}")
        settings = OmegaConf.to_container(model.precond, resolve=True)
        kind = settings.pop("kind", "edm")
        if kind not in preconds.KINDS:
            raise UserError(f"model.precond.kind={kind}: use one of {', '.join(preconds.KINDS)} (edm: Karras et al. "
                            "2022; vp: DDPM++ / VP-SDE; ve: NCSN++ / VE-SDE)")
        self.loss_cfg = loss
        self.net = preconds.build_precond(kind, instantiate(model.net), self.num_classes, **settings)
        self.net_ema = preconds.build_precond(kind, instantiate(model.net), self.num_classes, **settings)
        self.net_ema.load_state_dict(self.net.state_dict())
        self.net_ema.eval().requires_grad_(False)
        self.sampler = samplers.sampler_settings(model.get("sampler"))
        self.ema_kimg = float(ema_kimg)
        self.ema_rampup = float(ema_rampup) if ema_rampup is not None else None
        self.lr_rampup_kimg = float(optim.get("lr_rampup_kimg", 0) or 0)
        if self.ema_kimg < 0 or self.lr_rampup_kimg < 0:
            raise UserError(f"model.method.ema_kimg={self.ema_kimg:g} optim.lr_rampup_kimg={self.lr_rampup_kimg:g}: "
                            "both must be >= 0")
        self.sample_batch = int(sample_batch)
        self.optimizers = {"model": build_optimizer(optim.model, self.net.parameters())}

    def one_hot(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if labels is None:  # the composition check has already matched model and data classes
            raise UserError("a conditional EDM (model.num_classes > 0) needs labelled data")
        return torch.nn.functional.one_hot(labels.long(), self.num_classes).float()

    def set_lr(self, step: int, batch: int) -> None:
        """lr * min(images seen / ramp-up images, 1), times the configured decay (EDM: step 0 runs at lr 0)."""
        ramp = min(step * batch / (self.lr_rampup_kimg * 1000), 1.0) if self.lr_rampup_kimg else 1.0
        decay = self.lr_decay.factor(step)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * decay * ramp

    def train_step(self, batches: Iterator[Batch], step: int) -> dict[str, torch.Tensor]:
        seen = []

        def phase():
            x, labels = next(batches)
            if not seen:  # the step's images: each micro-batch's, on every rank
                self.set_lr(step, len(x) * max(1, int(self.accumulate)) * distributed.world().size)
            seen.append(len(x))
            sigma = self.net.sample_sigma(len(x), x.device, self.loss_cfg)
            noise = torch.randn_like(x)
            per_pixel = preconds.denoising_loss(self.net, x, sigma, noise, self.loss_cfg, self.one_hot(labels))
            loss = per_pixel.sum(dim=(1, 2, 3)).mean()
            return loss, {"loss/denoise": loss.detach(), "loss/denoise_per_pixel": per_pixel.detach().mean()}

        out = self.optimize("model", phase)
        batch = sum(seen) * distributed.world().size
        update_ema(self.net_ema, self.net, half_life_beta(batch, self.ema_kimg, step * batch, self.ema_rampup))
        return out

    # sampling

    def sampler_settings(self, steps: int | None = None, sampler: str | None = None) -> samplers.SamplerSettings:
        """The model's sampler (model.sampler) with ``steps`` / ``sampler`` overridden where given."""
        if steps is None and sampler is None:
            return self.sampler
        cfg = dataclasses.asdict(self.sampler)
        return samplers.sampler_settings(cfg, steps=steps, name=sampler)

    def sample_tag(self) -> str:
        """The suffix of every sample-based metric key: the sampler and its NFE, e.g. heun35."""
        return self.sampler.tag

    def sample_nfe(self) -> int:
        return self.sampler.nfe

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool = True,
               labels: torch.Tensor | None = None, batch_size: int | None = None, steps: int | None = None,
               sampler: str | None = None) -> torch.Tensor:
        """n images in [-1, 1] on the CPU. Latents (and the stochastic sampler's noise) are drawn on the
        CPU from ``generator`` when one is given, so a seed gives the same images on every device. A
        conditional model draws ``labels`` (default: the classes in turn)."""
        settings = self.sampler_settings(steps, sampler)
        D = self.net_ema if ema else self.net
        device = next(self.parameters()).device
        if self.num_classes and labels is None:
            labels = torch.arange(n) % self.num_classes
        was_training = D.training
        D.eval()
        batch_size = int(batch_size or self.sample_batch)
        noise = None
        if generator is not None:
            def noise(x):
                return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        # every latent first: the deterministic samplers' images do not depend on the batching
        latents = torch.randn((n, *self.shape), generator=generator)
        chunks = []
        for start in range(0, n, batch_size):
            z = latents[start:start + batch_size]
            y = self.one_hot(labels[start:start + len(z)].to(device)) if self.num_classes else None
            x = samplers.sample(partial(D, class_labels=y), z.to(device), settings, D.sigma_min, D.sigma_max, noise)
            chunks.append(x.float().clamp(-1, 1).cpu())
        D.train(was_training)
        return torch.cat(chunks) if chunks else torch.empty(0, *self.shape)
