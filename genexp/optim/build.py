"""An optimizer from its config: a partial ``_target_`` given the parameters."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genexp.errors import UserError


def lazy_compensation(interval) -> float:
    """StyleGAN2's lazy-regularisation compensation c = k / (k + 1) for a net regularised every k
    iterations in a phase of its own (stylegan2-ada-pytorch training_loop.py: lr * c, betas ** c), so
    that k main steps and one regularisation step move the weights as k + 1 plain steps would; 1
    when the net has no such phase (null)."""
    if interval is None:
        return 1.0
    k = int(interval)
    if k < 1:
        raise UserError(f"optim.<net>.lazy_reg_interval is a count of iterations >= 1 (or null), not {interval}")
    return k / (k + 1)


def build_optimizer(cfg: DictConfig, params):
    """``cfg`` is one net's entry (optim.generator, optim.model, ...): its lr and betas follow optim.lr /
    optim.betas by interpolation unless the net sets its own; ``lazy_reg_interval`` then scales both."""
    spec = OmegaConf.to_container(cfg, resolve=True)
    c = lazy_compensation(spec.pop("lazy_reg_interval", None))
    # YAML and the command line write betas as [0, 0.99]: torch wants floats, not an int and a float.
    if spec.get("betas") is not None:
        spec["betas"] = tuple(float(b) ** c for b in spec["betas"])
    if c != 1.0 and spec.get("lr") is not None:
        spec["lr"] = float(spec["lr"]) * c
    return instantiate(spec)(params=params)
