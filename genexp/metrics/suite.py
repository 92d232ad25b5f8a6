"""The metrics a run asked for, computed the same way in training and in `genexp eval`.

Each metric is a registered kind (metrics/registry.py, one module each under metrics/kinds/); this
module only orchestrates them: it builds the kinds that fit the data, computes or loads their
real-side statistics (cached on disk across runs, metrics/cache.py), generates the fakes in
batches shared out over data-parallel ranks, guards against non-finite samples, and records the
protocol. A metric that cannot run here is skipped with one line.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from genexp import distributed
from genexp.errors import UserError
from genexp.metrics import cache, registry
from genexp.metrics.ddp import empty_real_states, my_batches, one_tensor_per_list
from genexp.metrics.extractors import MetricUnavailable
from genexp.metrics.lpips_net import lpips_metric, rgb  # noqa: F401  (imported from here by commands)
from genexp.metrics.registry import Context, MetricKind, better, count_label, is_std_key  # noqa: F401
from genexp.metrics.rng import BUILD_SEED, own_rng

SampleFn = Callable[[int, torch.Generator], torch.Tensor]
# Settings of the metrics group that are not metrics.
SUITE_SETTINGS = ("repeats",)


def __getattr__(name: str):
    # Key prefixes where more is better, read from the registry (config/prepare.py's objective_direction).
    if name == "HIGHER_IS_BETTER":
        return registry.higher_is_better()
    raise AttributeError(name)


class MetricSuite:
    def __init__(self, metrics_cfg: DictConfig | dict | None, dataset, data_cfg: DictConfig,
                 device: torch.device, note: Callable[[str], None] = print,
                 num_samples: int | None = None, batch_size: int = 250, chosen: bool = True,
                 cache_dir: Path | None = None, small: str = "note"):
        """``chosen``: the user listed these metrics; when they are only the defaults, those that
        do not fit the kind of data (image metrics on points, say) are left out without a word.
        ``cache_dir``: where reference statistics are cached (None: not cached).
        ``small``: a metric below its sample minimum is refused ("refuse", a UserError) or noted ("note")."""
        self.dataset, self.data_cfg, self.device, self.batch_size = dataset, data_cfg, device, batch_size
        self.cache_dir, self.note = cache_dir, note
        self.metrics: list[MetricKind] = []
        self.skipped: dict[str, str] = {}
        self._real_done = False
        self._warned_cache = False
        self._data_files: list | None = None
        # A command that wants progress lines sets this: a function of (what, total) that returns a
        # counter with update(done) (logger/console.Counter); training's evaluations stay quiet.
        self.progress: Callable | None = None
        # Built on generators of their own (metrics/rng.py): an extractor's initialisation before its
        # weights load must not move the training run's random streams.
        with own_rng(BUILD_SEED, device):
            other_kind = self._build(metrics_cfg, Context(dataset, data_cfg, device, num_samples, note, small))
        if other_kind:
            reason = f"they do not apply to data={data_cfg.name} ({data_cfg.kind})"
            self.skipped.update({name: reason for name in other_kind})
            if chosen:
                note(f"metrics {', '.join(other_kind)} skipped: {reason}")

    def _build(self, metrics_cfg, ctx: Context) -> list[str]:
        """Every metric asked for that fits the data; returns those of another kind of data."""
        other_kind = []
        for name, cfg in (metrics_cfg or {}).items():
            if name in SUITE_SETTINGS:
                continue
            kind = registry.get(cfg.get("kind", name), f"metrics.{name}.kind")
            if kind.data_kinds is not None and ctx.data_cfg.kind not in kind.data_kinds:
                other_kind.append(name)
                continue
            try:
                with warnings.catch_warnings():  # torchmetrics warns that KID / IS keep features: known
                    warnings.filterwarnings("ignore", message=".*will save all extracted features")
                    self.metrics.append(kind(name, cfg, ctx))
            except MetricUnavailable as exc:
                if isinstance(exc, UserError):  # a weight file the user named is wrong: theirs to fix, not to skip
                    raise
                self.skipped[name] = str(exc)
                self.note(f"metric {name} skipped: {exc}")
        return other_kind

    def __bool__(self) -> bool:
        return bool(self.metrics)

    # reference statistics

    def _cache_path(self, m: MetricKind) -> tuple[Path, str] | None:
        if self.cache_dir is None:
            return None
        data = OmegaConf.to_container(self.data_cfg, resolve=True) if OmegaConf.is_config(self.data_cfg) \
            else dict(self.data_cfg)
        if self._data_files is None:  # listed (or content-hashed) once for every metric of the suite
            self._data_files = cache.data_fingerprint(data)
        key = cache.reference_key(data, m.kind, m.protocol, self._data_files)
        return self.cache_dir / f"{m.kind}-{key}.pt", key

    def prepare_reference(self) -> None:
        """Real-side statistics, from the cache or computed (and cached); once per suite.
        Data-parallel: rank 0 holds them and the other ranks hold empty real states of the same
        shapes, so that torchmetrics' sum / concatenation over ranks counts every real image once."""
        if self._real_done:
            return
        with own_rng(BUILD_SEED, self.device):
            self._reference_over_ranks()

    def _reference_over_ranks(self) -> None:
        real_side = [m for m in self.metrics if m.keeps_reference]
        if distributed.world().enabled and not distributed.world().main:
            shapes = distributed.broadcast_object(None)
            for m in real_side:
                empty_real_states(m.metric, shapes[m.key])
            self._real_done = True
            return
        self._prepare_reference(real_side)
        if distributed.world().enabled:
            distributed.broadcast_object({m.key: {k: (tuple(v.shape), v.dtype) for k, v in m.real_states().items()}
                                          for m in real_side})

    def _prepare_reference(self, real_side: list[MetricKind]) -> None:
        needs_real = []
        for m in (m for m in real_side if not m.real_ready):
            found = self._cache_path(m)
            if found is not None:
                m.cache_path, key = found
                m.cache_claims = cache.claims(key, m.kind, m.protocol)
                states, why = cache.load(m.cache_path, m.cache_claims, m.expected_real_shapes())
                why = why or (m.check_real_states(states) if states is not None else None)
                if why is None and states is not None:
                    m.load_real_states(states)
                    continue
                if why is not None:
                    self.note(f"reference statistics {m.cache_path} do not fit ({why}): computed again")
            needs_real.append(m)
        if needs_real:
            self._compute_real(needs_real)
            for m in (m for m in needs_real if m.cache_path is not None):
                failed = cache.save(m.cache_path, m.real_states(), m.cache_claims)
                if failed and not self._warned_cache:
                    self._warned_cache = True
                    self.note(failed)
        self._real_done = True

    def _compute_real(self, needs_real: list[MetricKind]) -> None:
        n_real = max(min(m.num_samples, len(self.dataset)) for m in needs_real)
        # A fixed subset (seed 0) so that every evaluation of this data compares to the same set.
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(0))[:n_real]
        counter = self.progress("real images", n_real) if self.progress else None
        for start in range(0, n_real, self.batch_size):
            if counter:
                counter.update(start)
            idx = order[start:start + self.batch_size]
            x = torch.stack([self.dataset[int(i)][0] for i in idx]).to(self.device)
            for m in needs_real:
                taken = min(m.num_samples, len(self.dataset))
                if start < taken:
                    m.update_real(x[: taken - start])
        if counter:
            counter.update(n_real)

    # evaluation

    def compute(self, sample_fn: SampleFn, seed: int = 0, model=None) -> dict[str, float]:
        """Generate max(num_samples) fakes in batches (latents from ``seed``) and score them.
        ``model``: (method, ema) when the samples come from a generator, for the metrics that need
        the model itself (ppl, nll, recon); without it they are skipped.

        KID and IS draw random subsets from torch's global RNG, model metrics their noise: every
        global generator is forked and seeded here (metrics/rng.py), so a result does not depend on
        when it is computed, and a training run's random streams do not depend on how often it
        evaluates."""
        if not self.metrics:
            return {}
        with own_rng(seed, self.device), torch.no_grad():
            results = sampler_tagged(self._compute(sample_fn, seed), model)
            results.update(self._model_scores(model, seed))
            return results

    def _model_scores(self, model, seed: int) -> dict[str, float]:
        results = {}
        for m in (m for m in self.metrics if m.needs_model):
            why = m.unfit(model)
            if why is None:
                try:
                    results.update(m.evaluate(model, seed))
                    continue
                except MetricUnavailable as exc:
                    why = str(exc)
            if m.key not in self.skipped:
                self.skipped[m.key] = why
                self.note(f"metric {m.key} skipped: {why}")
        return results

    def _compute(self, sample_fn: SampleFn, seed: int) -> dict[str, float]:
        self.prepare_reference()
        sampled = [m for m in self.metrics if not m.needs_model]
        for m in sampled:
            m.reset_fake()
        if not sampled:
            return {}
        total = max(m.num_samples for m in sampled)
        nonfinite = False
        # Data-parallel: every rank its share of the batches; a rank may have none (fewer batches than
        # ranks), and then joins the collectives below with empty fake states.
        counter = self.progress("generated images", total) if self.progress else None
        for batch in my_batches(-(-total // self.batch_size)):
            start = batch * self.batch_size
            if counter:
                counter.update(start)
            # A generator per batch: the same fakes whichever rank draws them and however many ranks.
            g = torch.Generator().manual_seed(seed * 1_000_003 + batch)
            fake = sample_fn(min(self.batch_size, total - start), g).to(self.device)
            if not bool(torch.isfinite(fake).all()):
                # A diverged generator: FID's matrix square root of NaN features can kill the process.
                nonfinite = True
                continue
            for m in sampled:
                part = fake[: max(0, m.num_samples - start)]
                if len(part):
                    m.update_fake(part, start, batch)
        if counter:
            counter.update(total)
        if distributed.any_rank(nonfinite):
            self.note(f"generated samples are not finite (NaN or inf): {', '.join(m.key for m in sampled)} "
                      "reported as nan")
            return {key: math.nan for m in sampled for key in m.keys()}
        results: dict[str, float] = {}
        for m in sampled:
            if distributed.active() and hasattr(m, "metric") and hasattr(m.metric, "_reductions"):
                one_tensor_per_list(m.metric)
            # Each metric's random draws (KID's subsets, IS's split order) from a stream of its own, so its
            # value does not depend on which metrics ran before it in this suite.
            with own_rng(metric_seed(seed, m.key), self.device):
                results.update(m.compute())
        return results

    def protocol(self) -> dict:
        return {m.key: {**m.protocol, **({"reference_cache": str(m.cache_path)} if m.cache_path else {})}
                for m in self.metrics}


def metric_seed(seed: int, key: str) -> int:
    """The seed of one metric's draws at one evaluation seed: stable across runs and processes (not hash())."""
    import zlib

    return (seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63


def sampler_tagged(results: dict[str, float], model) -> dict[str, float]:
    """A method whose samples depend on its sampler (diffusion: ``sample_tag()``, e.g. heun35) names it in
    every key of the sample-based metrics (fid/digits_lenet@2k/heun35) and records its NFE (sample/nfe)."""
    method = model[0] if model else None
    if not results or not hasattr(method, "sample_tag"):
        return results
    tag = method.sample_tag()
    out = {f"{key}/{tag}": value for key, value in results.items()}
    if hasattr(method, "sample_nfe"):
        out["sample/nfe"] = float(method.sample_nfe())
    return out


def best_of(best: dict[str, float], latest: dict[str, float]) -> dict[str, float]:
    """Each metric's best value so far; spreads (``*_std/``) are not metrics to optimise."""
    out = dict(best)
    for key, value in latest.items():
        if not is_std_key(key) and (key not in out or better(key, value, out[key])):
            out[key] = value
    return out


def over_seeds(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Each key's mean over fake-sample seeds and, as ``<kind>_std/...``, its sample standard deviation
    (a within-run spread such as is_std is replaced by the spread over seeds)."""
    out: dict[str, float] = {}
    for key in per_seed[0]:
        if is_std_key(key):
            continue
        values = torch.tensor([r.get(key, math.nan) for r in per_seed], dtype=torch.float64)
        out[key] = float(values.mean())
        out[registry.std_key(key)] = float(values.std()) if len(values) > 1 else 0.0
    return out
