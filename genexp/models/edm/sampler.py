"""EDM's samplers (Karras et al. 2022, Algorithms 1 and 2) for the probability-flow ODE
dx/dsigma = (x - D(x; sigma)) / sigma, from sigma_max down to 0.

Time steps: sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho for
i < N, then sigma_N = 0 (rho = 7: denser steps at low noise). sigma_min / sigma_max are clipped to the
range the preconditioning supports (VP and VE have finite ones).

- heun: Euler steps with a 2nd-order (trapezoidal) correction on every step but the last, the one to
  sigma = 0: 2N - 1 network evaluations (18 steps: 35 NFE, EDM's CIFAR-10 setting).
- euler: first order, N evaluations.
- stochastic: heun with "churn" (Algorithm 2): before step i, when S_min <= sigma_i <= S_max, noise is
  added to raise sigma_i to sigma_i (1 + gamma), gamma = min(S_churn / N, sqrt(2) - 1), the added noise
  scaled by S_noise. 2N - 1 evaluations.

The state is carried in float64 (EDM's generate.py does the same; the net itself runs in float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from genexp.errors import UserError

SAMPLERS = ("heun", "euler", "stochastic")
Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplerSettings:
    name: str = "heun"
    steps: int = 18
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    S_churn: float = 0.0
    S_min: float = 0.0
    S_max: float = math.inf
    S_noise: float = 1.0

    @property
    def nfe(self) -> int:
        return self.steps if self.name == "euler" else 2 * self.steps - 1

    @property
    def tag(self) -> str:
        """What a metric key carries: the sampler and its network evaluations, e.g. heun35."""
        return f"{self.name}{self.nfe}"


def sampler_settings(cfg=None, **overrides) -> SamplerSettings:
    """Settings from a config mapping (model.sampler) with command-line overrides (``name`` is the
    command's ``sampler=``, ``steps`` its ``steps=``; None: keep); every bad value a UserError that
    names the key as the user wrote it and the fix."""
    values = {k: v for k, v in dict(cfg or {}).items() if k in SamplerSettings.__dataclass_fields__}
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)

    def key(name: str) -> str:
        return {"name": "sampler", "steps": "steps"}[name] if name in given else f"model.sampler.{name}"

    name = values.get("name", "heun")
    if name not in SAMPLERS:
        raise UserError(f"{key('name')}={name}: use one of {', '.join(SAMPLERS)} (heun: EDM's deterministic "
                        "2nd-order sampler)")
    steps = values.get("steps", 18)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"{key('steps')}={steps}: a whole number of sampling steps, at least 1 (EDM's CIFAR-10 "
                        "setting: 18, 35 network evaluations with heun)")
    try:
        settings = SamplerSettings(**{**values, "name": name, "steps": steps,
                                      **{k: float(values[k]) for k in values if k not in ("name", "steps")}})
    except (TypeError, ValueError) as exc:
        raise UserError(f"model.sampler: {exc}") from None
    if not settings.rho > 0:
        raise UserError(f"{key('rho')}={settings.rho:g}: rho must be > 0 (EDM uses 7)")
    if not 0 < settings.sigma_min < settings.sigma_max:
        raise UserError(f"{key('sigma_min')}={settings.sigma_min:g} {key('sigma_max')}={settings.sigma_max:g}: "
                        "need 0 < sigma_min < sigma_max (EDM: 0.002 and 80)")
    if settings.S_churn < 0 or settings.S_noise < 0:
        raise UserError(f"{key('S_churn')}={settings.S_churn:g} {key('S_noise')}={settings.S_noise:g}: both must "
                        "be >= 0")
    return settings


def time_steps(settings: SamplerSettings, net_sigma_min: float = 0.0, net_sigma_max: float = math.inf,
               device: torch.device | None = None) -> torch.Tensor:
    """sigma_0 > ... > sigma_{N-1}, then 0: N + 1 float64 values."""
    sigma_min = max(settings.sigma_min, net_sigma_min)
    sigma_max = min(settings.sigma_max, net_sigma_max)
    n, rho = settings.steps, settings.rho
    i = torch.arange(n, dtype=torch.float64, device=device)
    frac = i / (n - 1) if n > 1 else i  # one step: from sigma_max straight to 0
    t = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros_like(t[:1])])


def sample(denoise: Denoise, latents: torch.Tensor, settings: SamplerSettings, net_sigma_min: float = 0.0,
           net_sigma_max: float = math.inf, noise: Callable[[torch.Tensor], torch.Tensor] | None = None
           ) -> torch.Tensor:
    """x_N from standard normal ``latents`` (scaled by sigma_0). ``denoise(x, sigma)`` is D(x; sigma) for a
    batch at one noise level; ``noise(x)`` draws the churn noise like x (the stochastic sampler: once per
    step, whether or not the step churns; default torch.randn_like)."""
    dtype = torch.float64 if latents.device.type != "mps" else torch.float32
    t_steps = time_steps(settings, net_sigma_min, net_sigma_max, latents.device).to(dtype)
    noise = noise or torch.randn_like
    stochastic = settings.name == "stochastic"
    x_next = latents.to(dtype) * t_steps[0]
    n = settings.steps
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur, t_hat = x_next, t_cur
        if stochastic:
            gamma = min(settings.S_churn / n, math.sqrt(2) - 1) if settings.S_min <= t_cur <= settings.S_max else 0.0
            t_hat = t_cur + gamma * t_cur
            x_cur = x_cur + (t_hat ** 2 - t_cur ** 2).sqrt() * settings.S_noise * noise(x_cur)
        d_cur = (x_cur - denoise(x_cur, t_hat).to(dtype)) / t_hat
        x_next = x_cur + (t_next - t_hat) * d_cur
        if settings.name != "euler" and i < n - 1:  # the trapezoidal correction; none on the step to 0
            d_prime = (x_next - denoise(x_next, t_next).to(dtype)) / t_next
            x_next = x_cur + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next
