"""Metric kinds by name, as stylegan2-ada-pytorch registers its metrics.

A kind is one class: what data it applies to, whether it needs the model or only samples, whether
it keeps reference (real-data) statistics, which way is better for each of its keys, and how it
turns batches into numbers. ``@register`` files it under its ``kind``; every module of
genexp/metrics/kinds/ is imported on first use, so a new metric is one module there and one yaml
in conf/metrics/. The suite (metrics/suite.py) owns everything around the numbers: sampling, rank
sharding, the cache, the NaN guard, the protocol record.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from genexp.errors import UserError

MAX, MIN = "maximize", "minimize"
_KINDS: dict[str, type[MetricKind]] = {}
_loaded = False


@dataclass
class Context:
    """What a metric may use while it is built."""

    dataset: object
    data_cfg: object
    device: torch.device
    num_samples: int | None = None  # the command's sample count, over each metric's own
    note: Callable[[str], None] = print
    # Below a kind's sample minimum: "refuse" (genexp eval: numbers meant to be quoted) or "note"
    # (training's progress evaluations, whose trainer.eval_samples is often small on purpose).
    small: str = "note"
    noted: set = field(default_factory=set)
    # Extractors built so far, by what names them: metrics that read one network share it (metrics/featured.py).
    extractors: dict = field(default_factory=dict)

    def example(self) -> torch.Tensor:
        """Two real images, to size a user extractor's output."""
        return torch.stack([self.dataset[i][0] for i in range(min(2, len(self.dataset)))])

    def check_count(self, name: str, key: str, cfg, counts: dict[str, int], minimum: int, why: str) -> dict:
        """Refuse (or note) a metric computed from fewer than ``minimum`` samples on a side; returns what
        the protocol records about it."""
        short = {side: n for side, n in counts.items() if n < minimum}
        if not short:
            return {}
        if cfg.get("allow_small"):
            return {"minimum_samples": minimum, "allow_small": True}
        sides = " and ".join(f"{n} {side}" for side, n in short.items())
        head = f"{key}: {sides} samples, under the minimum of {minimum} ({why})"
        if self.small == "refuse":
            raise UserError(f"{head}; use more samples, or set metrics.{name}.allow_small=true to report it anyway")
        if key not in self.noted:
            self.noted.add(key)
            self.note(f"{head}: a trend to follow, not a number to quote (genexp eval refuses it); "
                      f"metrics.{name}.allow_small=true silences this")
        return {"minimum_samples": minimum, "below_minimum": True}


class MetricKind:
    """One metric. Subclasses set the class attributes and implement what their ``needs`` call for."""

    kind: ClassVar[str] = ""
    data_kinds: ClassVar[tuple[str, ...] | None] = ("image",)  # None: any data (held-out scores)
    needs_model: ClassVar[bool] = False  # True: scored through the model (evaluate), not its samples
    keeps_reference: ClassVar[bool] = False  # real-data statistics, computed once and cached
    # Key prefixes (before '@') and which way is better; a prefix ending in '/' covers every extractor.
    directions: ClassVar[dict[str, str]] = {}

    key: str
    num_samples: int
    protocol: dict

    def __init__(self, name: str, cfg, ctx: Context):
        self.name, self.cfg, self.ctx = name, cfg, ctx
        self.cache_path = None  # where its reference statistics live, once looked up
        self.cache_claims: dict | None = None  # what its cache file must say it holds
        self.dataset = None  # the split a held-out metric scores
        self.real_ready = False  # real side set at build time (an imported reference): nothing to compute

    def keys(self) -> list[str]:
        """Every key compute() / evaluate() reports, for the NaN guard."""
        return [self.key]

    # sampled metrics
    def reset_fake(self) -> None:
        pass

    def update_real(self, x: torch.Tensor) -> None:
        pass

    def update_fake(self, x: torch.Tensor, start: int, batch: int) -> None:
        """``x``: generated samples ``start`` .. of this evaluation, from batch number ``batch``."""

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    # model metrics
    def unfit(self, model) -> str | None:
        """Why this metric cannot score ``model`` ((method, ema) or None), or None when it can."""
        return None

    def evaluate(self, model, seed: int) -> dict[str, float]:
        raise NotImplementedError

    # reference statistics (keeps_reference)
    def real_states(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_real_states(self, states: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def expected_real_shapes(self) -> dict[str, tuple]:
        """The shape of each stored real state, to check a cached file against."""
        raise NotImplementedError

    def reference_count(self) -> int:
        return int(self.protocol.get("num_real", 0))

    def check_real_states(self, states: dict[str, torch.Tensor]) -> str | None:
        """Why loaded ``states`` cannot be this metric's real side beyond their shapes, or None."""
        return None


def register(cls: type[MetricKind]) -> type[MetricKind]:
    if not cls.kind:
        raise TypeError(f"{cls.__name__} sets no kind")
    if cls.kind in _KINDS and _KINDS[cls.kind] is not cls:
        raise TypeError(f"metric kind {cls.kind} is registered twice: {_KINDS[cls.kind].__name__}, {cls.__name__}")
    _KINDS[cls.kind] = cls
    return cls


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from genexp.metrics import kinds

    for info in pkgutil.iter_modules(kinds.__path__):
        importlib.import_module(f"{kinds.__name__}.{info.name}")


def registered() -> dict[str, type[MetricKind]]:
    _load_builtin()
    return dict(_KINDS)


def get(kind: str, setting: str = "kind") -> type[MetricKind]:
    kinds = registered()
    if kind not in kinds:
        raise UserError(f"{setting}={kind}: not a registered metric; registered: {', '.join(sorted(kinds))}")
    return kinds[kind]


def higher_is_better() -> tuple[str, ...]:
    """Every key prefix where more is better (the old HIGHER_IS_BETTER)."""
    return tuple(p for cls in registered().values() for p, d in cls.directions.items() if d == MAX)


def direction_of_key(key: str) -> str:
    stem = key.split("@", 1)[0]
    for cls in registered().values():
        for prefix, d in cls.directions.items():
            if stem.startswith(prefix):
                return d
    return MIN


def direction(name: str) -> str | None:
    """maximize / minimize for a metric kind (fid) or key prefix (modes/captured, kid_x1e3); None when
    the name covers keys of both ways (modes: captured up, reverse_kl down). Unknown: minimize."""
    kinds = registered()
    if name in kinds and kinds[name].directions:
        ways = set(kinds[name].directions.values())
        return ways.pop() if len(ways) == 1 else None
    probe = name if "/" in name else name + "/"
    prefixes = {p: d for cls in kinds.values() for p, d in cls.directions.items()}
    for prefix, d in prefixes.items():
        if probe.startswith(prefix):
            return d
    covered = {d for p, d in prefixes.items() if p.startswith(probe)}
    if len(covered) == 1:
        return covered.pop()
    return None if covered else MIN


def names_key(name: str, key: str) -> bool:
    """Does an objective ``name`` (a kind such as kid, or a key prefix such as kid_x1e3 or
    modes/captured) pick ``key``? A kind covers every key prefix it registers (kid: kid_x1e3/...)."""
    if is_std_key(key):
        return False
    if key.split("/", 1)[0] == name or key.split("@", 1)[0] == name:
        return True
    kind = registered().get(name)
    stem = key.split("@", 1)[0]
    return kind is not None and any(stem.startswith(p) and not p.endswith("_std/") for p in kind.directions)


def better(key: str, new: float, old: float) -> bool:
    return new > old if direction_of_key(key) == MAX else new < old


def count_label(n: int) -> str:
    """2000 -> 2k, 2500 -> 2.5k, 1797 -> 1797."""
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1000:g}k"
    return str(n)


def std_key(key: str) -> str:
    """The spread of ``key``: fid/x@2k -> fid_std/x@2k."""
    return key.replace("/", "_std/", 1) if "/" in key else key.replace("@", "_std@", 1)


def is_std_key(key: str) -> bool:
    return "_std/" in key or "_std@" in key
