"""An optimizer from its config: a partial ``_target_`` given the parameters."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genexp.errors import UserError


def lazy_compensation(interval) -> float:
    """StyleGAN2's lazy-regularisation compensation c = k / (k + 1) for a net regularised every k
    iterations in a phase of its own (stylegan2-ada-pytorch training_loop.py: lr * c, betas ** c): the
    k + 1 optimizer steps of k iterations (k main, one regularisation) then move the weights about as
    far as k plain steps, and Adam's averages span as many iterations; 1 when there is no such phase."""
    if interval is None:
        return 1.0
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise UserError(f"optim.<net>.lazy_reg_interval={interval}: a count of iterations >= 1 (the net's lazy "
                        "regulariser's every), or null for none")
    return interval / (interval + 1)


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
