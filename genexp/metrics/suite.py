"""The metrics a run asked for, computed the same way in training and in `genexp eval`.

Each metric's key names what it measured: ``<metric>/<extractor>@<fake count>``, e.g.
``fid/digits_lenet@2k``. Real-image statistics are computed once per suite and kept
(torchmetrics' reset_real_features=False), and cached on disk across runs (metrics/cache.py);
each evaluation generates only the fakes, streamed in batches. A metric that cannot run here
is skipped with one line.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from genexp import distributed
from genexp.metrics import cache
from genexp.metrics.extractors import MetricUnavailable, build_extractor, resolve_name
from genexp.metrics.modes import mode_statistics, stacked_mode_statistics

POINT_METRICS = ("modes",)
ANY_DATA = ("nll", "recon")  # scored on held-out data of either kind
MODEL_METRICS = ("ppl", "nll", "recon")  # need the model itself, not only its samples
REAL_SIDE = ("fid", "kid", "pr")  # metrics that compare against real-data statistics
STANDARD_RESIZE = {"inception": "tf1_bilinear", "digits_lenet": "bilinear", "mnist_lenet": "bilinear"}

# Metrics where more is better (by key name before '@'); every other is better when lower.
HIGHER_IS_BETTER = ("is/", "precision/", "recall/", "lpips_diversity/", "modes/captured", "modes/hq_percent",
                    "stacked/modes")

SampleFn = Callable[[int, torch.Generator], torch.Tensor]


def count_label(n: int) -> str:
    """2000 -> 2k, 2500 -> 2.5k, 1797 -> 1797."""
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1000:g}k"
    return str(n)


class Metric:
    def __init__(self, key: str, kind: str, metric, num_samples: int, protocol: dict):
        self.key, self.kind, self.metric, self.num_samples, self.protocol = key, kind, metric, num_samples, protocol
        self.cache_path: Path | None = None  # its cached reference statistics, once looked up
        self.dataset = None  # held-out metrics (nll, recon): the split they score


class MetricSuite:
    def __init__(self, metrics_cfg: DictConfig | dict | None, dataset, data_cfg: DictConfig,
                 device: torch.device, note: Callable[[str], None] = print,
                 num_samples: int | None = None, batch_size: int = 250, chosen: bool = True,
                 cache_dir: Path | None = None):
        """``chosen``: the user listed these metrics; when they are only the defaults, those that
        do not fit the kind of data (image metrics on points, say) are left out without a word.
        ``cache_dir``: where reference statistics are cached (None: not cached)."""
        self.dataset, self.data_cfg, self.device, self.batch_size = dataset, data_cfg, device, batch_size
        self.cache_dir, self.note = cache_dir, note
        self.metrics: list[Metric] = []
        self.skipped: dict[str, str] = {}
        self._real_done = False
        other_kind = []
        for name, cfg in (metrics_cfg or {}).items():
            kind = cfg.get("kind", name)
            if kind not in ANY_DATA and (kind in POINT_METRICS) != (data_cfg.kind == "points"):
                other_kind.append(name)
                continue
            try:
                with warnings.catch_warnings():  # torchmetrics warns that KID / IS keep features: known
                    warnings.filterwarnings("ignore", message=".*will save all extracted features")
                    self.metrics.append(self._build(name, cfg, num_samples))
            except MetricUnavailable as exc:
                self.skipped[name] = str(exc)
                note(f"metric {name} skipped: {exc}")
        if other_kind:
            reason = f"they do not apply to data={data_cfg.name} ({data_cfg.kind})"
            self.skipped.update({name: reason for name in other_kind})
            if chosen:
                note(f"metrics {', '.join(other_kind)} skipped: {reason}")

    def _build(self, name: str, cfg, num_samples: int | None) -> Metric:
        kind = cfg.get("kind", name)
        if kind in ("nll", "recon"):
            return self._build_held_out(kind, cfg, num_samples)
        n = int(num_samples or cfg.num_samples)
        n_real = min(n, len(self.dataset))
        if kind == "modes":
            if not hasattr(self.dataset, "modes"):
                raise MetricUnavailable(f"data={self.data_cfg.name} does not say where its modes are")
            protocol = {"num_fake": n, "hq_sigmas": float(cfg.hq_sigmas), "modes": len(self.dataset.modes),
                        "std": float(self.dataset.std)}
            return Metric(f"modes@{count_label(n)}", kind, None, n, protocol)
        if kind == "stacked_modes":
            if not getattr(self.dataset, "stacked", False):
                raise MetricUnavailable(f"it counts the digits of Stacked MNIST channels; data={self.data_cfg.name} "
                                        "is not data=stacked_mnist")
            net, ident = build_extractor("mnist_lenet", "logits", cfg.get("weights"))
            return Metric(f"stacked@{count_label(n)}", kind, net.to(self.device), n,
                          {"num_fake": n, "classifier": ident, "modes": 1000})
        if kind == "lpips":
            return self._build_lpips(cfg, n)
        if kind == "ppl":
            return self._build_ppl(cfg, n)
        if kind not in ("fid", "kid", "is", "pr"):
            raise MetricUnavailable(f"unknown metric kind '{kind}': use fid, kid, is, pr, lpips, ppl, nll or recon")
        extractor_name = resolve_name(cfg.get("extractor", "auto"), self.data_cfg.name)
        output = "logits" if kind == "is" else "features"
        module, ident = build_extractor(extractor_name, output, cfg.get("weights"), cfg.get("resize"),
                                        bool(cfg.get("download", True)), self._example())
        protocol = {"extractor": ident, "num_fake": n}
        if kind == "fid":
            from torchmetrics.image.fid import FrechetInceptionDistance

            metric = FrechetInceptionDistance(feature=module, reset_real_features=False)
            protocol["num_real"] = n_real
        elif kind == "pr":
            from genexp.metrics.precision_recall import PrecisionRecall

            metric = PrecisionRecall(feature=module, k=int(cfg.get("k", 3)), reset_real_features=False)
            protocol.update(num_real=n_real, k=int(cfg.get("k", 3)))
        elif kind == "kid":
            from torchmetrics.image.kid import KernelInceptionDistance

            subset = min(int(cfg.subset_size), n, n_real)
            metric = KernelInceptionDistance(feature=module, subsets=int(cfg.subsets), subset_size=subset,
                                             reset_real_features=False)
            protocol.update(num_real=n_real, subsets=int(cfg.subsets), subset_size=subset)
        else:
            from torchmetrics.image.inception import InceptionScore

            splits = min(int(cfg.splits), n)
            metric = InceptionScore(feature=module, splits=splits)
            protocol["splits"] = splits
        # A filter other than the extractor's standard one shows in the key: the numbers differ.
        standard = STANDARD_RESIZE.get(ident["name"], ident["resize"])
        suffix = f"-{ident['resize']}" if ident["resize"] != standard else ""
        key = f"{kind}/{ident['name']}{suffix}@{count_label(n)}"
        return Metric(key, kind, metric.to(self.device), n, protocol)

    def _example(self) -> torch.Tensor:
        """Two real images, to size a user extractor's output."""
        return torch.stack([self.dataset[i][0] for i in range(min(2, len(self.dataset)))])

    def _build_lpips(self, cfg, n: int) -> Metric:
        net, mode = cfg.get("net", "alex"), cfg.get("mode", "diversity")
        if mode not in ("diversity", "paired"):
            raise MetricUnavailable(f"metrics.lpips.mode={mode}: use diversity (pairs of samples) or paired "
                                    "(the i-th generated image against the i-th real one)")
        try:
            metric = lpips_metric(net)
        except Exception as exc:
            raise MetricUnavailable(f"LPIPS needs torchvision and its backbone weights ({type(exc).__name__}): "
                                    "pip install 'genexp[gpu]' where torchvision matches torch") from None
        if mode == "paired":
            n = min(n, len(self.dataset))
            return Metric(f"lpips_recon/{net}@{count_label(n)}", "lpips", metric.to(self.device), n,
                          {"mode": mode, "pairs": n, "net": net, "order": "real and generated in index order"})
        return Metric(f"lpips_diversity/{net}@{count_label(n)}", "lpips", metric.to(self.device), n,
                      {"mode": mode, "pairs": n // 2, "net": net})

    def _build_ppl(self, cfg, n: int) -> Metric:
        from genexp.metrics.ppl import LPIPS_NETS, FeatureDistance, build_lpips

        sim = cfg.get("sim", "vgg")
        if isinstance(sim, str) and sim in LPIPS_NETS:
            try:
                net = build_lpips(sim, cfg.get("lpips_resize"))
            except Exception as exc:
                raise MetricUnavailable(f"PPL with LPIPS-{sim} needs torchvision and its {sim} weights "
                                        f"({type(exc).__name__}): pip install 'genexp[gpu]' where torchvision "
                                        "matches torch, or metrics.ppl.sim=digits_lenet|mnist_lenet|inception "
                                        "for a feature-space distance") from None
            ident = {"name": f"lpips_{sim}", "resize": cfg.get("lpips_resize")}
        else:
            module, ident = build_extractor(resolve_name(sim, self.data_cfg.name), "features", cfg.get("weights"),
                                            cfg.get("resize"), bool(cfg.get("download", True)), self._example())
            net = FeatureDistance(module)
        space, sampling = str(cfg.get("space", "z")), str(cfg.get("sampling", "end"))
        interpolation = str(cfg.get("interpolation") or ("slerp" if space == "z" else "lerp"))
        if space not in ("z", "w") or sampling not in ("end", "full") or interpolation not in ("lerp", "slerp"):
            raise MetricUnavailable(f"metrics.ppl space={space} sampling={sampling} interpolation={interpolation}: "
                                    "use space z|w, sampling end|full, interpolation lerp|slerp")
        protocol = {"paths": n, "distance": ident, "epsilon": float(cfg.epsilon), "space": space,
                    "sampling": sampling, "interpolation": interpolation, "crop": bool(cfg.get("crop", False)),
                    "discard": [float(cfg.lower_discard), float(cfg.upper_discard)]}
        key = f"ppl_{space}{'end' if sampling == 'end' else 'full'}/{ident['name']}@{count_label(n)}"
        return Metric(key, "ppl", net.to(self.device), n, protocol)

    def _build_held_out(self, kind: str, cfg, num_samples: int | None) -> Metric:
        from genexp.metrics.likelihood import held_out

        dataset, split = held_out(self.data_cfg, cfg.get("split"), self.dataset)
        n = min(int(num_samples or cfg.get("num_samples") or len(dataset)), len(dataset))
        label = split if n == len(dataset) else f"{split}:{count_label(n)}"
        protocol = {"split": split, "examples": n, "batch_size": int(cfg.get("batch_size", 100))}
        lpips = None
        if kind == "nll":
            protocol.update(iwae_samples=int(cfg.get("iwae_samples", 1000)), levels=self.data_cfg.get("levels"))
        else:
            net = cfg.get("net", "alex")
            try:
                lpips = lpips_metric(net).to(self.device)
                protocol["lpips"] = net
            except Exception as exc:
                self.note(f"metric recon: LPIPS left out, pixel MSE only (LPIPS needs torchvision and its {net} "
                          f"weights, {type(exc).__name__}): pip install 'genexp[gpu]' where torchvision matches torch")
        metric = Metric(f"{kind}@{label}", kind, lpips, n, protocol)
        metric.dataset = dataset
        return metric

    def _held_out_scores(self, model) -> dict[str, float]:
        from genexp.metrics.likelihood import mean_nll, nll_results, reconstruction

        results = {}
        for m in (m for m in self.metrics if m.kind in ("nll", "recon")):
            hook = "nll" if m.kind == "nll" else "reconstruct"
            if model is None or not hasattr(model[0], hook):
                what = type(model[0]).__name__ if model is not None else "generated images"
                why = ("it needs a model with a likelihood (a VAE, flow or autoregressive model)" if m.kind == "nll"
                       else "it needs a model with an encoder (BiGAN, O-GAN, VAE, VQ-VAE)") + f"; {what} has none"
                if m.key not in self.skipped:
                    self.skipped[m.key] = why
                    self.note(f"metric {m.key} skipped: {why}")
                continue
            p, label = m.protocol, m.key.split("@", 1)[1]
            if m.kind == "nll":
                means = mean_nll(model[0], m.dataset, m.num_samples, p["batch_size"], self.device,
                                 iwae_samples=p["iwae_samples"])
                dims = int(torch.as_tensor(m.dataset[0][0]).numel())
                results.update(nll_results(means, label, dims))
            else:
                scores = reconstruction(model[0], m.dataset, m.num_samples, p["batch_size"], self.device, m.metric)
                results[f"recon/mse@{label}"] = scores["mse"]
                if "lpips" in scores:
                    results[f"recon/lpips_{p['lpips']}@{label}"] = scores["lpips"]
        return results

    def __bool__(self) -> bool:
        return bool(self.metrics)

    def _cache_path(self, m: Metric) -> Path | None:
        if self.cache_dir is None:
            return None
        data = OmegaConf.to_container(self.data_cfg, resolve=True) if OmegaConf.is_config(self.data_cfg) \
            else dict(self.data_cfg)
        return self.cache_dir / f"{m.kind}-{cache.reference_key(data, m.kind, m.protocol)}.pt"

    def prepare_reference(self) -> None:
        """Real-side statistics, from the cache or computed (and cached); once per suite.
        Data-parallel: rank 0 holds them and the other ranks hold empty real states of the same
        shapes, so that torchmetrics' sum / concatenation over ranks counts every real image once."""
        if self._real_done:
            return
        real_side = [m for m in self.metrics if m.kind in REAL_SIDE]
        if distributed.world().enabled and not distributed.world().main:
            shapes = distributed.broadcast_object(None)
            for m in real_side:
                empty_real_states(m.metric, shapes[m.key])
            self._real_done = True
            return
        self._prepare_reference()
        if distributed.world().enabled:
            distributed.broadcast_object({m.key: {k: (tuple(v.shape), v.dtype) for k, v in
                                                  cache.real_states(m.metric).items()} for m in real_side})

    def _prepare_reference(self) -> None:
        needs_real = []
        for m in (m for m in self.metrics if m.kind in REAL_SIDE):
            path = self._cache_path(m)
            states = cache.load(path) if path is not None else None
            if states is not None:
                cache.load_real_states(m.metric, states)
            else:
                needs_real.append(m)
            m.cache_path = path
        if needs_real:
            self._compute_real(needs_real)
            for m in needs_real:
                failed = m.cache_path is not None and cache.save(m.cache_path, cache.real_states(m.metric))
                if failed:
                    self.note(failed)
        self._real_done = True

    def _compute_real(self, needs_real: list[Metric]) -> None:
        n_real = max(min(m.num_samples, len(self.dataset)) for m in needs_real)
        # A fixed subset (seed 0) so that every evaluation of this data compares to the same set.
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(0))[:n_real]
        for start in range(0, n_real, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = torch.stack([self.dataset[int(i)][0] for i in idx]).to(self.device)
            for m in needs_real:
                taken = min(m.num_samples, len(self.dataset))
                if start < taken:
                    m.metric.update(x[: taken - start], real=True)

    def compute(self, sample_fn: SampleFn, seed: int = 0, model=None) -> dict[str, float]:
        """Generate max(num_samples) fakes in batches (latents from ``seed``) and score them.
        ``model``: (method, ema) when the samples come from a generator, for the metrics that walk
        its latent space (ppl); without it they are skipped.

        KID and IS draw random subsets from torch's global RNG: it is forked and seeded
        here, so a result does not depend on when it is computed, and a training run's
        random stream does not depend on how often it evaluates."""
        if not self.metrics:
            return {}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            results = self._compute(sample_fn, seed)
            results.update(self._path_lengths(model, seed))
            results.update(self._held_out_scores(model))
            return results

    def _path_lengths(self, model, seed: int) -> dict[str, float]:
        from genexp.metrics.ppl import path_length

        results = {}
        for m in (m for m in self.metrics if m.kind == "ppl"):
            if model is None or not hasattr(model[0], "latents"):
                if m.key not in self.skipped:
                    why = "it walks a generator's latent space: evaluate a checkpoint, not images"
                    self.skipped[m.key] = why
                    self.note(f"metric {m.key} skipped: {why}")
                continue
            p = m.protocol
            try:
                mean, std = path_length(model[0], model[1], m.metric, m.num_samples, p["epsilon"],
                                        p["interpolation"], p["discard"][0], p["discard"][1],
                                        torch.Generator().manual_seed(seed + 1), self.device, p["space"],
                                        p["sampling"], p["crop"])
            except ValueError as exc:  # e.g. w space on a generator without one
                self.skipped[m.key] = str(exc)
                self.note(f"metric {m.key} skipped: {exc}")
                continue
            results[m.key] = mean
            results[m.key.replace("/", "_std/", 1)] = std
        return results

    def _compute(self, sample_fn: SampleFn, seed: int) -> dict[str, float]:
        self.prepare_reference()
        for m in self.metrics:
            if hasattr(m.metric, "reset"):  # torchmetrics state; the classifier-only metrics keep none
                m.metric.reset()
        sampled = [m for m in self.metrics if m.kind not in MODEL_METRICS]
        if not sampled:
            return {}
        total = max(m.num_samples for m in sampled)
        lpips_pending: torch.Tensor | None = None
        points: list[tuple[int, torch.Tensor]] = []
        stacked: list[tuple[int, torch.Tensor]] = []
        world = distributed.world()
        nonfinite = False
        for batch, start in enumerate(range(0, total, self.batch_size)):
            if batch % world.size != world.rank:  # data-parallel: every rank its share of the batches
                continue
            # A generator per batch: the same fakes whichever rank draws them and however many ranks.
            g = torch.Generator().manual_seed(seed * 1_000_003 + batch)
            fake = sample_fn(min(self.batch_size, total - start), g).to(self.device)
            if not bool(torch.isfinite(fake).all()):
                # A diverged generator: FID's matrix square root of NaN features can kill the process.
                nonfinite = True
                continue
            for m in sampled:
                part = fake[: max(0, m.num_samples - start)]
                if len(part) == 0:
                    continue
                if m.kind == "modes":
                    points.append((batch, part.cpu()))
                elif m.kind == "stacked_modes":  # each channel is a digit: mode = 100 a + 10 b + c
                    digits = m.metric(part.reshape(-1, 1, *part.shape[2:])).argmax(1).view(len(part), 3)
                    stacked.append((batch, (digits * torch.tensor([100, 10, 1], device=digits.device)).sum(1).cpu()))
                elif m.kind == "lpips" and m.protocol["mode"] == "paired":  # reconstructions of the reals
                    real = torch.stack([self.dataset[i][0] for i in range(start, start + len(part))])
                    m.metric.update(rgb(part).clamp(-1, 1), rgb(real.to(self.device)).clamp(-1, 1))
                elif m.kind == "lpips":
                    lpips_pending = part if lpips_pending is None else torch.cat([lpips_pending, part])
                    pairs = len(lpips_pending) // 2 * 2
                    if pairs:
                        a, b = lpips_pending[:pairs].chunk(2)
                        m.metric.update(rgb(a).clamp(-1, 1), rgb(b).clamp(-1, 1))
                        lpips_pending = lpips_pending[pairs:]
                elif m.kind == "is":
                    m.metric.update(part)
                else:
                    m.metric.update(part, real=False)
        if distributed.any_rank(nonfinite):
            self.note(f"generated samples are not finite (NaN or inf): {', '.join(m.key for m in sampled)} "
                      "reported as nan")
            return {key: math.nan for m in sampled for key in result_keys(m)}
        points, stacked = in_batch_order(points), in_batch_order(stacked)
        results: dict[str, float] = {}
        for m in sampled:
            if m.kind == "stacked_modes":
                stats = stacked_mode_statistics(torch.cat(stacked)[: m.num_samples])
                at = m.key.split("@", 1)[1]
                results.update({f"stacked/modes@{at}": float(stats["modes"]), f"stacked/kl@{at}": stats["kl"]})
                continue
            if m.kind == "modes":
                stats = mode_statistics(torch.cat(points)[: m.num_samples], self.dataset.modes, self.dataset.std,
                                        m.protocol["hq_sigmas"])
                at = m.key.split("@", 1)[1]
                results.update({f"modes/{k}@{at}": float(stats[k]) for k in ("captured", "hq_percent", "reverse_kl")})
                continue
            if distributed.active():
                one_tensor_per_list(m.metric)
            value = m.metric.compute()
            if m.kind == "pr":
                results[m.key.replace("pr/", "precision/", 1)] = float(value[0])
                results[m.key.replace("pr/", "recall/", 1)] = float(value[1])
            elif isinstance(value, tuple):  # IS and KID: (mean, std)
                results[m.key] = float(value[0])
                results[m.key.replace("/", "_std/", 1)] = float(value[1])
            else:
                results[m.key] = float(value)
        return results

    def protocol(self) -> dict:
        return {m.key: {**m.protocol, **({"reference_cache": str(m.cache_path)} if m.cache_path else {})}
                for m in self.metrics}


def result_keys(m: Metric) -> list[str]:
    """The keys a sampled metric reports."""
    at = m.key.split("@", 1)[1]
    if m.kind == "modes":
        return [f"modes/{k}@{at}" for k in ("captured", "hq_percent", "reverse_kl")]
    if m.kind == "stacked_modes":
        return [f"stacked/modes@{at}", f"stacked/kl@{at}"]
    if m.kind == "pr":
        return [m.key.replace("pr/", "precision/", 1), m.key.replace("pr/", "recall/", 1)]
    if m.kind in ("is", "kid"):
        return [m.key, m.key.replace("/", "_std/", 1)]
    return [m.key]


def in_batch_order(parts: list[tuple[int, torch.Tensor]]) -> list[torch.Tensor]:
    """Every rank's (batch number, tensor) parts, gathered and put in batch order."""
    if not distributed.active():
        return [t for _, t in parts]
    gathered = [p for rank_parts in distributed.gather_objects(parts) for p in rank_parts]
    return [t for _, t in sorted(gathered, key=lambda p: p[0])]


def one_tensor_per_list(metric) -> None:
    """torchmetrics gathers a list state element by element (unless its reduction is its own
    concatenation), so ranks holding different numbers of batches would disagree on the number of
    collectives: every list state becomes one tensor, with no rows where a rank drew no batch."""
    for name in metric._reductions:
        value = getattr(metric, name)
        if not isinstance(value, list):
            continue
        local = torch.cat(value) if value else None
        shapes = [s for s in distributed.gather_objects(None if local is None else
                                                        (tuple(local.shape), local.dtype)) if s is not None]
        if local is None and shapes:
            local = torch.empty((0, *shapes[0][0][1:]), dtype=shapes[0][1], device=metric.device)
        if local is not None:
            setattr(metric, name, [local])


def empty_real_states(metric, shapes: dict[str, tuple]) -> None:
    """Real states that add nothing to a sum or a concatenation over ranks: zeros, or no rows."""
    for name, (shape, dtype) in shapes.items():
        current = getattr(metric, name)
        if isinstance(current, list):
            setattr(metric, name, [torch.empty((0, *shape[1:]), dtype=dtype, device=metric.device)])
        else:
            setattr(metric, name, torch.zeros(shape, dtype=dtype, device=metric.device))


def lpips_metric(net: str):
    """torchmetrics' LPIPS on images in [-1, 1], mean over the pairs it is given."""
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type=net)


def better(key: str, new: float, old: float) -> bool:
    return new > old if key.startswith(HIGHER_IS_BETTER) else new < old


def best_of(best: dict[str, float], latest: dict[str, float]) -> dict[str, float]:
    """Each metric's best value so far; spreads (``*_std/``) are not metrics to optimise."""
    out = dict(best)
    for key, value in latest.items():
        if "_std/" not in key and (key not in out or better(key, value, out[key])):
            out[key] = value
    return out


def rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
