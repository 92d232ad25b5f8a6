"""GAN training for any objective: an iteration of phases (k D steps, G, lazy regularizers of D and G; see
phases.py) in the order loss.schedule gives, EMA of G, augmentation (DiffAugment, ADA), PacGAN."""

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
from genexp.methods.phases import DEFAULT_SCHEDULE, IterationData, Micro, Phase, check_schedule
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
        try:
            self.schedule = check_schedule(loss.get("schedule") or DEFAULT_SCHEDULE)
        except ValueError as err:
            raise UserError(str(err)) from None
        # D's regularizers as their own lazy phases (the official Dreg) or on D's loss (no Dreg)
        self.d_reg_phases = "Dreg" in self.schedule
        if self.g_regularizers and "Greg" not in self.schedule:
            raise UserError(f"loss.g_regularizers {', '.join(self.g_regularizers)} run in the Greg phase: "
                            f"add Greg to loss.schedule={list(self.schedule)}")
        self.ema_beta, self.ema_start, self.ema_rampup = float(ema_beta), int(ema_start), bool(ema_rampup)
        # StyleGAN2's form: a half-life in thousands of images (replaces ema_beta when set).
        self.ema_kimg = float(ema_kimg) if ema_kimg is not None else None
        self.ema_kimg_rampup = float(ema_kimg_rampup) if ema_kimg_rampup is not None else None
        self.optimizers = {"G": build_optimizer(optim.generator, self.G.parameters()),
                           "D": build_optimizer(optim.discriminator, self.D.parameters())}
        self.d_steps_done = 0  # a Python int: reading a device tensor each step would sync the GPU
        self._phases = self.phases()

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

    def phases(self) -> list[Phase]:
        """The iteration, in ``loss.schedule`` order: Dmain (k = loss.d_steps optimizer steps of D; with no
        Dreg in the schedule, D's regularizers join its loss when due, on D's own step clock), Dreg (one
        lazy phase per D regularizer, each on its interval), Gmain, Greg (one lazy phase per G
        regularizer). Subclasses change a phase's loss (``d_main``, ``g_main``, ``reg_inputs``), not
        the schedule."""
        phases = {
            "Dmain": [Phase("Dmain", "D", self.d_main, repeat=self.d_steps, draws=True, after=self.after_d_step)],
            "Dreg": [Phase(f"Dreg/{name}", "D", partial(self.d_reg, name), interval=reg.every, reg=True)
                     for name, reg in self.d_regularizers.items()] if self.d_reg_phases else [],
            "Gmain": [Phase("Gmain", "G", self.g_main, freeze=("D",))],
            "Greg": [Phase(f"Greg/{name}", "G", partial(self.g_reg, name), interval=reg.every, reg=True,
                           freeze=("D",)) for name, reg in self.g_regularizers.items()],
        }
        return [phase for name in self.schedule for phase in phases[name]]

    def train_step(self, batches: Iterator[Batch], step: int) -> dict[str, torch.Tensor]:
        self.lr_decay.apply(self.optimizers.values(), step)
        out, data = self.run_phases(batches, step)
        self.update_averages(step, data.size)
        return self.report(out)

    def run_phases(self, batches: Iterator[Batch], step: int) -> tuple[dict[str, torch.Tensor], IterationData]:
        """Every phase due at ``step``, in order, each optimizer step through ``optimize``. Returns the
        scalars (a later step's value replaces an earlier one's) and the iteration's data."""
        data = IterationData(batches)
        out: dict[str, torch.Tensor] = {}
        for phase in self._phases:
            if not phase.due(step):
                continue
            for _ in range(phase.repeat):
                data.start(phase.draws)
                for name in phase.freeze:  # no gradient for weights that do not step: less work
                    getattr(self, name).requires_grad_(False)
                out.update(self.optimize(phase.net, lambda phase=phase: phase.micro_loss(data.next())))
                for name in phase.freeze:
                    getattr(self, name).requires_grad_(True)
                if phase.after is not None:
                    phase.after()
        return out, data

    def after_d_step(self) -> None:
        for constrain in self.d_constraints:
            constrain(self.D)
        self.d_steps_done += 1  # once per optimizer step: the clock of the regularizers on D's loss

    def ema_decay(self, step: int, batch: int) -> float:
        """The EMA's decay at this step for a (whole, accumulated) batch of ``batch`` samples."""
        if self.ema_kimg is not None:
            return half_life_beta(batch, self.ema_kimg, step * batch, self.ema_kimg_rampup)
        return ema_beta(self.ema_beta, step, self.ema_start, self.ema_rampup)

    def update_averages(self, step: int, batch: int) -> None:
        update_ema(self.G_ema, self.G, self.ema_decay(step, batch))

    def report(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The step's scalars in the order they are logged: D's and the regularizers', then G's loss and
        D's mean logits, then ADA's state."""
        sign_real = out.pop("ada/sign_real", None)
        last = {key: out.pop(key) for key in ("loss/g", "d/real", "d/fake") if key in out}
        out.update(last)
        if self.ada is not None:
            out["ada/p"] = self.ada.p.detach().clone()
            out["ada/sign_real"] = sign_real
        return out

    def fakes(self, n: int, labels: torch.Tensor | None) -> torch.Tensor:
        """G's samples for D's phases: no gradient (G does not step there)."""
        with torch.no_grad():
            return self.G(self.latents(n, self.z_dim), labels)

    def real_input(self, micro: Micro) -> torch.Tensor:
        """D's view of the micro-batch's reals, computed once per iteration."""
        if micro.real_d is None:
            micro.real_d = self.d_input(micro.real)
        return micro.real_d

    def d_labels(self, micro: Micro) -> torch.Tensor | None:
        return micro.labels if self.pack == 1 else None  # a packed input has no single label

    def d_main(self, micro: Micro) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss on one micro-batch (with the regularizers due at this D step when the schedule has no
        Dreg phase)."""
        fake = self.fakes(len(micro), micro.labels)
        micro.real_d = real_p = self.d_input(micro.real)
        fake_p, d_labels = self.d_input(fake), self.d_labels(micro)
        real_logits, fake_logits = self.D(real_p, d_labels), self.D(fake_p, d_labels)
        d_loss = self.objective.d_loss(real_logits, fake_logits, real_p, fake_p)
        scalars = {"loss/d": d_loss.detach()}
        if self.ada is not None:
            self.ada.observe(real_logits, len(micro))
        if not self.d_reg_phases:
            d_loss = d_loss + self.regularize(real_p, fake_p, d_labels, scalars)
        scalars["d/real"] = real_logits.detach().mean()
        if self.ada is not None:
            scalars["ada/sign_real"] = real_logits.detach().sign().mean()
        return d_loss, scalars

    def reg_inputs(self, micro: Micro, fake: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """What D's regularizers are taken on: its real input, a fake one (when ``fake``), the labels."""
        fake_p = self.d_input(self.fakes(len(micro), micro.labels)) if fake else None
        return self.real_input(micro), fake_p, self.d_labels(micro)

    def d_reg(self, name: str, micro: Micro) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One D regularizer on one micro-batch, its own optimizer step (the official Dreg phase). R1's
        input gradient is taken with ``torch.autograd.grad(..., inputs=[x])``, which computes no weight
        gradient on the way (the official ``no_weight_gradients``); the backward of the penalty does."""
        reg = self.d_regularizers[name]
        real_p, fake_p, d_labels = self.reg_inputs(micro, reg.needs_fake)
        penalty = reg(self.D, real_p, fake_p, d_labels)
        return penalty, {f"reg/{name}": penalty.detach()}

    def g_main(self, micro: Micro) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's loss on one micro-batch of new latents, with the labels (and size) of a D micro-batch."""
        d_labels = self.d_labels(micro)
        fake = self.G(self.latents(len(micro), self.z_dim), micro.labels)
        fake_logits = self.D(self.d_input(fake), d_labels)
        real_for_g = self.D(self.real_input(micro), d_labels).detach() if self.objective.g_needs_real else None
        g_loss = self.objective.g_loss(fake_logits, real_for_g)
        return g_loss, {"loss/g": g_loss.detach(), "d/fake": fake_logits.detach().mean()}

    def g_reg(self, name: str, micro: Micro) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One G regularizer (path length) on new latents with the micro-batch's labels and size."""
        z = self.latents(len(micro), self.z_dim)
        penalty = self.g_regularizers[name](self.G, z, micro.labels)
        return penalty, {f"reg/{name}": penalty.detach()}

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
