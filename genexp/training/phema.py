"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", section 3 and appendix C): during training, a few power-function EMAs of the weights
(``trainer.phema.sigma_rels``) are kept and written out every ``trainer.phema.snapshot_every`` steps;
after training, `genexp phema` combines the snapshots into the EMA of any other length.

A power-function EMA at time t averages the weights seen so far with the profile
p_t(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t]. Its length is given as sigma_rel, the
profile's standard deviation relative to t. Time here is optimizer steps (genexp's batch is fixed
within a run, so steps and images give the same profiles: the ratios below are all that count).

Tracking it step by step: the update at step t (1, 2, ...) is ema <- lerp(ema, w_t, 1 - beta_t) with
beta_t = (1 - 1/t)^(gamma + 1), which gives w_s the weight (s^(gamma+1) - (s-1)^(gamma+1)) / t^(gamma+1):
exactly the continuous profile integrated over step s's interval (s - 1, s]. So a track *is* the
continuous profile applied to the piecewise-constant weight trajectory, and the reconstruction
below, which works with the continuous profiles, has no discretisation error of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genexp.errors import UserError

# The longest EMA a power function can be: sigma_rel(gamma) peaks at gamma = (sqrt(5) - 3) / 2, where
# gamma + 2 is the golden ratio (the zero of d/dgamma log sigma_rel^2); ~0.3003.
GAMMA_AT_LONGEST = (math.sqrt(5.0) - 3.0) / 2.0

SNAPSHOT_FORMAT = "genexp-phema-snapshot"
SNAPSHOT_VERSION = 1


def sigma_rel_of(gamma: float) -> float:
    """EDM2 eq. 123: the relative standard deviation of the profile t^gamma on [0, 1]."""
    g = float(gamma)
    return math.sqrt((g + 1.0) / ((g + 2.0) ** 2 * (g + 3.0)))


SIGMA_REL_MAX = sigma_rel_of(GAMMA_AT_LONGEST)


def gamma_of(sigma_rel: float) -> float:
    """The exponent whose profile has this sigma_rel (EDM2 eq. 126): eq. 123 squared and multiplied out
    is the cubic gamma^3 + 7 gamma^2 + (16 - s^-2) gamma + (12 - s^-2) = 0; of its two roots above -1, the
    one above GAMMA_AT_LONGEST (the larger) is the one whose sigma_rel falls as gamma grows."""
    s = float(sigma_rel)
    if not 0.0 < s < SIGMA_REL_MAX:
        raise ValueError(f"sigma_rel={s:g} is outside (0, {SIGMA_REL_MAX:.4f}), the lengths power-function EMAs have")
    inv = s ** -2
    roots = np.roots([1.0, 7.0, 16.0 - inv, 12.0 - inv])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9 * max(1.0, abs(r.real))))


def power_beta(gamma: float, step: int) -> float:
    """The decay of the update at step ``step`` (1, 2, ...): EDM2 eq. 127 with a time step of 1."""
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


def profile_inner(t_a: float, gamma_a: float, t_b: float, gamma_b: float) -> float:
    """The integral over tau of p_a(tau) p_b(tau) for two power-function profiles (EDM2 eq. 151): both
    vanish past their own time, so it runs to min(t_a, t_b), where the powers integrate in closed form."""
    lo, hi, g_lo, g_hi = (t_a, t_b, gamma_a, gamma_b) if t_a <= t_b else (t_b, t_a, gamma_b, gamma_a)
    # (ga+1)(gb+1) / (t_lo^(g_lo+1) t_hi^(g_hi+1)) * t_lo^(ga+gb+1) / (ga+gb+1), in a form that cannot overflow
    return (gamma_a + 1) * (gamma_b + 1) * (lo / hi) ** g_hi / ((gamma_a + gamma_b + 1) * hi)


def solve_coefficients(stored: Sequence[tuple[float, float]], target: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Weights x over the stored profiles (time, gamma) whose sum approaches the target profile in least
    squares (EDM2 algorithm 3: the normal equations A x = b of inner products), rescaled to sum to 1 so
    that a constant weight stays itself. Returns x and the relative residual ||p - sum x_i p_i|| / ||p||
    of the profile that is actually used."""
    A = np.array([[profile_inner(ta, ga, tb, gb) for tb, gb in stored] for ta, ga in stored])
    b = np.array([profile_inner(t, g, *target) for t, g in stored])
    x = np.linalg.lstsq(A, b, rcond=None)[0]  # lstsq: many snapshots make A nearly singular
    x = x / x.sum()
    norm2 = profile_inner(*target, *target)
    error2 = norm2 - 2.0 * float(x @ b) + float(x @ A @ x)
    return x, math.sqrt(max(error2, 0.0) / norm2)


def tracked_nets(method: nn.Module) -> dict[str, str]:
    """Which nets the tracks average, and the net a reconstruction is written into: where a family keeps
    an EMA copy (``G`` and ``G_ema``, ``net`` and ``net_ema``), the averaged net and its copy, so the
    reconstruction samples the way the EMA does; a family without one (VAE, flows, autoregressive) has
    its sampling model in its nets, and those are averaged and replaced in place."""
    nets = [name for name, child in method.named_children() if any(True for _ in child.parameters())]
    pairs = {name[:-4]: name for name in nets if name.endswith("_ema") and name[:-4] in nets}
    return pairs or {name: name for name in nets}


def in_nets(key: str, nets) -> bool:
    return key.split(".", 1)[0] in nets


class PowerEMA:
    """The power-function EMA tracks of a method's tracked nets (parameters; buffers are not averaged and
    are written with each snapshot as the live nets hold them)."""

    def __init__(self, method: nn.Module, sigma_rels: Sequence[float], every: int):
        self.method, self.every = method, int(every)
        self.sigma_rels = [float(s) for s in sigma_rels]
        self.gammas = [gamma_of(s) for s in self.sigma_rels]
        self.nets = tracked_nets(method)
        self.params = [(k, p) for k, p in method.named_parameters() if in_nets(k, self.nets)]
        self.tracks = [[p.detach().clone() for _, p in self.params] for _ in self.sigma_rels]

    @classmethod
    def from_config(cls, cfg, method: nn.Module) -> PowerEMA | None:
        """trainer.phema: None when off (no sigma_rels); a bad value is the user's, in one line."""
        sigma_rels = list(cfg.get("sigma_rels") or []) if cfg is not None else []
        if not sigma_rels:
            return None
        try:
            values = [float(s) for s in sigma_rels]
        except (TypeError, ValueError):
            raise UserError(f"trainer.phema.sigma_rels={sigma_rels}: give EMA lengths as numbers, e.g. "
                            "[0.05,0.10]") from None
        bad = [s for s in values if not 0.0 < s < SIGMA_REL_MAX]
        if bad or len(set(values)) != len(values):
            raise UserError(f"trainer.phema.sigma_rels={values}: give distinct EMA lengths in (0, {SIGMA_REL_MAX:.3f}) "
                            "(EDM2 stores [0.05,0.10])")
        every = cfg.get("snapshot_every")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise UserError(f"trainer.phema.snapshot_every={every}: give the steps between snapshots (an integer >= 1)")
        return cls(method, values, every)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimizer step ``step`` (1, 2, ...): each track takes the live weights at its beta."""
        live = [p.detach() for _, p in self.params]
        for gamma, track in zip(self.gammas, self.tracks):
            torch._foreach_lerp_(track, live, 1.0 - power_beta(gamma, step))

    def state_dict(self) -> dict:
        return {"sigma_rels": list(self.sigma_rels), "keys": [k for k, _ in self.params],
                "tracks": [list(track) for track in self.tracks]}

    @torch.no_grad()
    def load_state_dict(self, state: dict | None) -> None:
        if state is None:
            raise UserError(f"trainer.phema.sigma_rels={self.sigma_rels} on a resume of a run that kept no post-hoc "
                            "EMA tracks: a track needs the whole run; resume without trainer.phema.sigma_rels, or "
                            "train a new run with it")
        if [float(s) for s in state["sigma_rels"]] != self.sigma_rels:
            raise UserError(f"trainer.phema.sigma_rels={self.sigma_rels}, but the run's tracks are "
                            f"{list(state['sigma_rels'])}: resume with the run's own trainer.phema.sigma_rels")
        if list(state["keys"]) != [k for k, _ in self.params]:
            raise UserError("the checkpoint's post-hoc EMA tracks do not fit this model: resume with the run's own "
                            "model settings")
        for track, saved in zip(self.tracks, state["tracks"]):
            for t, s in zip(track, saved):
                t.copy_(s)

    def snapshot(self, step: int, batch_size: int | None, meta: dict) -> dict:
        """What a snapshot file holds: each track's weights (on the CPU), the live buffers, the step."""
        buffers = {k: b.detach().cpu().clone() for k, b in self.method.named_buffers() if in_nets(k, self.nets)}
        return {"genexp_phema": {"format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION},
                "step": int(step), "nimg": int(step) * int(batch_size) if batch_size else None,
                "sigma_rels": list(self.sigma_rels), "gammas": list(self.gammas), "nets": dict(self.nets),
                "tracks": [{k: t.detach().cpu().clone() for (k, _), t in zip(self.params, track)}
                           for track in self.tracks],
                "buffers": buffers, **meta}


def snapshot_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "phema" / "snapshots"


def snapshot_path(run_dir: Path, step: int) -> Path:
    return snapshot_dir(run_dir) / f"step_{int(step):06d}.pt"
