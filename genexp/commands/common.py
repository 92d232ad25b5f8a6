"""What the commands share: the run dir, and a method (with its data) rebuilt from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from genexp.errors import UserError
from genexp.methods import Method, build_method
from genexp.pretrained.as_checkpoint import load_any_checkpoint


def run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    path = Path(HydraConfig.get().runtime.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def task_overrides() -> list[str]:
    """This job's overrides, as a resume would re-apply them (not resume= nor hydra.*)."""
    from hydra.core.hydra_config import HydraConfig

    return [o for o in HydraConfig.get().overrides.task
            if not o.startswith(("resume=", "hydra.", "hydra/", "+hydra", "~hydra"))]


def wandb_names(run_dir: Path, group: str | None) -> tuple[str, str | None]:
    """(run name, group) for W&B: a sweep's jobs are named by their overrides (loss=hinge trainer.seed=1,
    not 0, 1, ...) and grouped by their sweep folder unless logger.wandb.group is set; one run keeps
    its run dir's name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return run_dir.name, group
    swept = [o for o in task_overrides() if not o.startswith(("logger.", "logger="))]
    return " ".join(swept) or run_dir.name, group or run_dir.parent.name


def metrics_chosen() -> bool:
    """Did the command line pick the metrics (rather than take the config's defaults)?"""
    from hydra.core.hydra_config import HydraConfig

    return any(o.lstrip("+~").split("=", 1)[0] in ("metrics", "experiment") for o in HydraConfig.get().overrides.task)


def restore_method(ckpt_path: str, device: torch.device,
                   trust: bool | None = None) -> tuple[Method, DictConfig, dict]:
    """The checkpoint's method with its weights, and the training config it was made with.

    The stored config is data (genexp.config.trust): it builds genexp's own classes and those the
    user names on this command line, or anything with ``trust`` (trust_checkpoint=true)."""
    from hydra.core.hydra_config import HydraConfig

    from genexp.cli import conf_dir
    from genexp.config import trust as gate

    ckpt = load_any_checkpoint(ckpt_path, map_location=device)
    typed = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    if trust is None:
        trust = gate.trust_flag(typed)
    config = ckpt.get("config")
    if not isinstance(config, dict):
        raise UserError(f"checkpoint {ckpt_path} holds no training config: give a checkpoint from a genexp run dir")
    gate.check_stored_config(config, f"checkpoint {ckpt_path}", gate.trusted_targets(conf_dir(), typed), trust)
    train_cfg = OmegaConf.create(config)
    try:
        method = build_method(train_cfg, device)
        method.load_state_dict_all(ckpt["method"], optimizers=False)
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"checkpoint {ckpt_path} does not fit the model its config describes "
                        f"({str(exc).splitlines()[0][:100]}): was it written by another genexp version?") from None
    method.eval()
    return method, train_cfg, ckpt
