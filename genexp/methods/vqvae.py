"""VQ-VAE training (van den Oord et al. 2017) with a Gated PixelCNN prior over its code maps.

Every step trains the autoencoder: reconstruction + beta * commitment (+ the codebook loss when the
codebook learns by gradient; otherwise its EMA update follows the step). From ``prior_start`` (a
fraction of the run) the prior also takes a step, on the detached codes of the same batch: the paper
fits the prior after the autoencoder, and waiting lets the codes settle before the prior chases them.
Before that the prior's loss is still computed (without a step), so ``loss/prior`` means the same in
every logged window. New images are codes drawn from the prior, decoded.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from genexp.errors import UserError
from genexp.methods.base import Batch, Method
from genexp.models.vqvae import latent_side, usage_and_perplexity
from genexp.optim.build import build_optimizer

RECON_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def build(model: DictConfig, key: str, **kwargs):
    """A net from model.<key>; a value it refuses (a ValueError) is the user's to fix, in one line."""
    try:
        return instantiate(model[key], **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ValueError):
            raise UserError(f"model.{key}: {exc.__cause__}") from None
        raise


class VQVAE(Method):
    def __init__(self, model: DictConfig, loss: DictConfig, optim: DictConfig, prior_start: float = 0.5):
        super().__init__()
        if not 0.0 <= float(prior_start) < 1.0:
            raise UserError(f"model.method.prior_start={prior_start}: the fraction of the run after which the prior "
                            "trains, in [0, 1)")
        if loss.recon not in RECON_LOSSES:
            raise UserError(f"loss.recon={loss.recon}: use {' or '.join(RECON_LOSSES)}")
        try:
            side = latent_side(int(model.resolution), int(model.downsamples))
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.image_shape = (int(model.channels), int(model.resolution), int(model.resolution))
        self.latent_shape = (1, side, side)  # one code per latent position: the prior sees a 1-channel map
        self.encoder = build(model, "encoder")
        self.decoder = build(model, "decoder")
        self.quantizer = build(model, "quantizer")
        self.num_classes = int(model.get("num_classes", 0) or 0)
        self.prior = build(model, "prior", channels=1, categories=self.quantizer.codes, embed=True,
                           num_classes=self.num_classes)
        self.beta, self.recon_loss = float(loss.beta), RECON_LOSSES[loss.recon]
        self.prior_start_step = int(float(prior_start) * int(model.max_steps))
        autoencoder = [*self.encoder.parameters(), *self.decoder.parameters(), *self.quantizer.parameters()]
        # The prior takes optim.prior when the optimizer config has one, else the same settings as the model.
        self.optimizers = {"model": build_optimizer(optim.model, autoencoder),
                           "prior": build_optimizer(optim.get("prior") or optim.model, self.prior.parameters())}

    def compile_targets(self) -> list[str]:
        """The encoder, decoder and prior; not the quantizer (a nearest-code lookup whose codebook the
        EMA update and restarts rewrite in place between calls)."""
        return [name for name in ("encoder", "decoder", "prior") if any(True for _ in getattr(self, name).parameters())]

    def train_step(self, batches: Iterator[Batch], step: int) -> dict[str, torch.Tensor]:
        self.lr_decay.apply(self.optimizers.values(), step)
        micro: list[tuple] = []  # each micro-batch's encoder outputs, codes and labels

        def phase():
            x, y = next(batches)
            z_e = self.encoder(x)
            q = self.quantizer(z_e)
            recon = self.recon_loss(self.decoder(q.z_q), x)
            loss = recon + q.codebook + self.beta * q.commit
            micro.append((z_e.detach(), q.codes, y))
            scalars = {"loss/recon": recon.detach(), "loss/commit": q.commit.detach()}
            if not self.quantizer.ema:
                scalars["loss/codebook"] = q.codebook.detach()
            return loss, scalars

        model_out = self.optimize("model", phase)
        # The codebook's EMA update and restarts follow the step, once, from the whole (accumulated) batch.
        z_e = micro[0][0] if len(micro) == 1 else torch.cat([m[0] for m in micro])
        codes = micro[0][1] if len(micro) == 1 else torch.cat([m[1] for m in micro])
        restarts = self.quantizer.update(z_e, codes)
        usage, perplexity = usage_and_perplexity(codes, self.quantizer.codes)
        out = {"loss/recon": model_out["loss/recon"], "loss/commit": model_out["loss/commit"],
               "codebook/usage": usage, "codebook/perplexity": perplexity, "codebook/restarts": restarts.float()}
        if not self.quantizer.ema:
            out["loss/codebook"] = model_out["loss/codebook"]
        out["loss/prior"] = self.prior_step(micro, step >= self.prior_start_step)
        return out

    def prior_step(self, micro: list[tuple], train: bool) -> torch.Tensor:
        """Cross-entropy of the prior on the step's code maps (micro-batch by micro-batch, detached), in
        nats per code; a step when ``train``."""
        pending = iter(micro)

        def phase():
            _, codes, y = next(pending)
            codes = codes[:, None]
            with torch.set_grad_enabled(train):
                loss = F.cross_entropy(self.prior(codes, self.labels(y)), codes)
            return loss, {"loss/prior": loss.detach()}

        if train:
            return self.optimize("prior", phase)["loss/prior"]
        losses = [phase()[0].detach() for _ in micro]
        return losses[0] if len(losses) == 1 else torch.stack(losses).mean()

    def labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if y is None or bool((y < 0).any()):
            raise UserError("model.num_classes > 0 makes the prior class-conditional, and this data has no labels: "
                            "set model.num_classes=0")
        return y

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Code indices (N, h, w) of images in [-1, 1]."""
        return self.quantizer(self.encoder(x)).codes

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.quantizer(self.encoder(x)).z_q).clamp(-1, 1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from code maps (N, h, w)."""
        device = next(self.parameters()).device
        return self.decoder(self.quantizer.lookup(codes.to(device))).clamp(-1, 1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool = True,
               labels: torch.Tensor | None = None, temperature: float = 1.0, batch_size: int = 256) -> torch.Tensor:
        """Code maps from the prior (raster order, drawn with ``generator``; ``temperature`` divides its
        logits), decoded. A class-conditional prior draws ``labels`` (default: the classes in turn).
        ``ema`` is unused: there is no weight average."""
        if self.num_classes and labels is None:
            labels = torch.arange(n) % self.num_classes
        was_training = self.training
        self.eval()
        chunks = []
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            y = labels[start:start + count] if labels is not None else None
            codes = self.prior.sample(count, self.latent_shape, generator=generator, labels=y,
                                      temperature=temperature)
            chunks.append(self.decode(codes[:, 0]).float().cpu())
        self.train(was_training)
        return torch.cat(chunks) if chunks else torch.empty(0, *self.image_shape)
