"""GAN training for any objective: k D steps per G step, regularizers of D, EMA of G."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import partial

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from genexp.errors import UserError
from genexp.methods.ada import AdaptiveAugment
from genexp.methods.augment import augment, parse_policy
from genexp.methods.base import Batch, Method
from genexp.methods.ema import ema_beta, half_life_beta, update_ema
from genexp.models.layers import pack_samples
from genexp.optim.build import build_optimizer


class GAN(Method):
    def __init__(self, model: DictConfig, loss: DictConfig, optim: DictConfig,
                 ema_beta: float = 0.999, ema_start: int = 0, ema_rampup: bool = False, pack: int = 1,
                 augment=(), ema_kimg: float | None = None, ema_kimg_rampup: float | None = None,
                 ada: DictConfig | dict | None = None):
        super().__init__()
        self.augment = parse_policy(augment)  # DiffAugment on everything D sees
        # ADA: p adapts to D's overfitting; a submodule, so p travels in checkpoints
        ada = dict(ada or {})
        self.ada = AdaptiveAugment(**ada) if ada.pop("enabled", False) else None
        self.pack = int(pack)  # PacGAN: D judges `pack` samples at once (its input is widened to match)
        self.G = instantiate(model.generator)
        self.D = instantiate(model.discriminator)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.z_dim = int(self.G.z_dim)
        self.num_classes = int(getattr(self.G, "num_classes", 0))
        self.objective = instantiate(loss.objective)
        self.d_regularizers = {name: instantiate(cfg) for name, cfg in (loss.get("d_regularizers") or {}).items()}
        self.d_constraints = [instantiate(cfg) for cfg in (loss.get("d_constraints") or {}).values()]
        self.g_regularizers = {name: instantiate(cfg) for name, cfg in (loss.get("g_regularizers") or {}).items()}
        if self.g_regularizers and not hasattr(self.G, "styles"):
            raise UserError(f"loss.g_regularizers {', '.join(self.g_regularizers)} need a style-based generator "
                            f"and {type(self.G).__name__} has no styles: use model=stylegan2")
        self.d_steps = int(loss.get("d_steps", 1))
        self.ema_beta, self.ema_start, self.ema_rampup = float(ema_beta), int(ema_start), bool(ema_rampup)
        # StyleGAN2's form: a half-life in thousands of images (replaces ema_beta when set).
        self.ema_kimg = float(ema_kimg) if ema_kimg is not None else None
        self.ema_kimg_rampup = float(ema_kimg_rampup) if ema_kimg_rampup is not None else None
        self.optimizers = {"G": build_optimizer(optim.generator, self.G.parameters()),
                           "D": build_optimizer(optim.discriminator, self.D.parameters())}
        self.d_steps_done = 0  # a Python int: reading a device tensor each step would sync the GPU

    def get_extra_state(self) -> dict:
        return {"d_steps_done": self.d_steps_done,
                "g_regularizers": {name: reg.state() for name, reg in self.g_regularizers.items()}}

    def set_extra_state(self, state: dict) -> None:
        self.d_steps_done = int(state["d_steps_done"])
        for name, reg_state in state.get("g_regularizers", {}).items():
            if name in self.g_regularizers:
                self.g_regularizers[name].load_state(reg_state)

    def compile_targets(self) -> list[str]:
        """G and D (BiGAN: and E), less D when it has regularizers (every D regularizer is a gradient
        penalty, R1, WGAN-GP, WGAN-div: a backward through D's input gradient, which a compiled D
        refuses) and G when it has regularizers (path length differentiates twice through G's styles
        and synthesis; it calls them directly, not through the compiled ``G.forward``, so this one is
        a precaution: a G compiled with backend aot_eager did train with path length)."""
        exclude = ({"D"} if self.d_regularizers else set()) | ({"G"} if self.g_regularizers else set())
        return [name for name in super().compile_targets() if name not in exclude]

    def train_step(self, batches: Iterator[Batch], step: int) -> dict[str, torch.Tensor]:
        d_out: dict[str, torch.Tensor] = {}
        self.lr_decay.apply(self.optimizers.values(), step)
        self.D.requires_grad_(True)
        micro: list[tuple] = []  # the last D step's micro-batches: (labels, size, D's real input)
        for _ in range(self.d_steps):
            micro = []
            d_out.update(self.optimize("D", partial(self.d_phase, batches, micro)))
            for constrain in self.d_constraints:
                constrain(self.D)
            self.d_steps_done += 1  # once per optimizer step: the lazy regularizers' clock

        # D's weights take no gradient from G's loss: skip computing it. Each G micro-phase takes the
        # labels and size of one micro-batch of the last D step (and its reals, for relativistic losses).
        self.D.requires_grad_(False)
        pending = iter(micro)
        g_out = self.optimize("G", lambda: self.g_phase(*next(pending)))
        reg_out: dict[str, torch.Tensor] = {}
        self.regularize_g(step, micro, reg_out)
        self.D.requires_grad_(True)

        batch = sum(size for _, size, _ in micro)  # the whole (accumulated) batch of the step
        if self.ema_kimg is not None:
            beta = half_life_beta(batch, self.ema_kimg, step * batch, self.ema_kimg_rampup)
        else:
            beta = ema_beta(self.ema_beta, step, self.ema_start, self.ema_rampup)
        update_ema(self.G_ema, self.G, beta)
        d_real, sign_real = d_out.pop("d/real"), d_out.pop("ada/sign_real", None)
        out = {**d_out, **reg_out, "loss/g": g_out["loss/g"], "d/real": d_real, "d/fake": g_out["d/fake"]}
        if self.ada is not None:
            out["ada/p"] = self.ada.p.detach().clone()
            out["ada/sign_real"] = sign_real
        return out

    def d_phase(self, batches: Iterator[Batch], micro: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss on one micro-batch (with the regularizers due at this D step); notes the micro-batch
        in ``micro`` for G's step."""
        real, labels = next(batches)
        with torch.no_grad():
            fake = self.G(self.latents(len(real), self.z_dim), labels)
        real_p, fake_p = self.d_input(real), self.d_input(fake)
        d_labels = labels if self.pack == 1 else None  # a packed input has no single label
        real_logits, fake_logits = self.D(real_p, d_labels), self.D(fake_p, d_labels)
        d_loss = self.objective.d_loss(real_logits, fake_logits, real_p, fake_p)
        scalars = {"loss/d": d_loss.detach()}
        if self.ada is not None:
            self.ada.observe(real_logits, len(real))
        d_loss = d_loss + self.regularize(real_p, fake_p, d_labels, scalars)
        scalars["d/real"] = real_logits.detach().mean()
        if self.ada is not None:
            scalars["ada/sign_real"] = real_logits.detach().sign().mean()
        micro.append((labels, len(real), real_p if self.objective.g_needs_real else None))
        return d_loss, scalars

    def g_phase(self, labels, size: int, real_p) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's loss on one micro-batch of new latents, with the labels (and size) of a D micro-batch."""
        d_labels = labels if self.pack == 1 else None
        fake = self.G(self.latents(size, self.z_dim), labels)
        fake_logits = self.D(self.d_input(fake), d_labels)
        real_for_g = self.D(real_p, d_labels).detach() if self.objective.g_needs_real else None
        g_loss = self.objective.g_loss(fake_logits, real_for_g)
        return g_loss, {"loss/g": g_loss.detach(), "d/fake": fake_logits.detach().mean()}

    def regularize_g(self, step: int, micro: list, out: dict) -> None:
        """G's regularizers due at this G step, each its own optimizer step, scaled by its interval;
        one micro-phase per micro-batch of the step (its size and labels)."""
        due = {name: reg for name, reg in self.g_regularizers.items() if step % reg.every == 0}
        if not due:
            return
        pending = iter(micro)

        def phase():
            labels, size, _ = next(pending)
            z = self.latents(size, self.z_dim)
            total, scalars = 0.0, {}
            for name, reg in due.items():
                penalty = reg(self.G, z, labels)
                scalars[f"reg/{name}"] = penalty.detach()
                total = total + penalty * reg.every
            return total, scalars

        out.update(self.optimize("G", phase))

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        """What D judges: augmented (ADA, DiffAugment), then packed (PacGAN)."""
        if self.ada is not None:
            x = self.ada(x)
        return pack_samples(augment(x, self.augment), self.pack)

    def regularize(self, real, fake, labels, out: dict) -> torch.Tensor | float:
        """The D regularizers due at this D step, each scaled by its interval (lazy regularization:
        every k steps at k times the weight keeps the average strength; StyleGAN2 sec. 3.1)."""
        total: torch.Tensor | float = 0.0
        for name, reg in self.d_regularizers.items():
            if self.d_steps_done % reg.every == 0:
                penalty = reg(self.D, real, fake, labels)
                out[f"reg/{name}"] = penalty.detach()
                total = total + penalty * reg.every
        return total

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None, ema: bool = True) -> torch.Tensor:
        """Images for given latents (perceptual path length walks them)."""
        G = self.G_ema if ema else self.G
        was_training = G.training
        G.eval()
        out = G(z, labels)
        G.train(was_training)
        return out

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool = True,
               batch_size: int = 256, labels: torch.Tensor | None = None) -> torch.Tensor:
        """A conditional G draws ``labels`` (default: the classes in turn, 0, 1, ..., K-1, 0, ...)."""
        G = self.G_ema if ema else self.G
        device = next(self.parameters()).device
        if self.num_classes and labels is None:
            labels = torch.arange(n) % self.num_classes
        was_training = G.training
        G.eval()
        chunks = []
        for start in range(0, n, batch_size):
            z = self.latents(min(batch_size, n - start), self.z_dim, generator)
            y = labels[start:start + len(z)].to(device) if labels is not None else None
            chunks.append(G(z, y).float().cpu())
        G.train(was_training)
        out = torch.cat(chunks)[:n] if chunks else torch.empty(0)
        # Images leave in [-1, 1], as saved images would (StyleGAN2's G has no tanh); points as they are.
        return out.clamp(-1, 1) if out.dim() == 4 else out
