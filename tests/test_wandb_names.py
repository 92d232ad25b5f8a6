"""W&B: a sweep's jobs are named by their overrides and grouped by their sweep folder."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf, open_dict


def test_sweep_jobs_named_by_overrides_and_grouped_by_sweep(tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from genexp.commands.common import wandb_names
    from tests.conftest import compose

    cfg = compose("train", ["loss=hinge", "trainer.seed=1"])
    hydra_cfg = cfg.hydra
    saved = HydraConfig.instance().cfg
    try:
        with open_dict(hydra_cfg):
            hydra_cfg.mode = RunMode.MULTIRUN
            hydra_cfg.overrides.task = ["loss=hinge", "trainer.seed=1", "logger.wandb.mode=offline"]
        HydraConfig.instance().set_config(OmegaConf.create({"hydra": hydra_cfg}))
        job = Path(tmp_path / "2026-12-02_03-00-00_multirun" / "3")
        assert wandb_names(job, None) == ("loss=hinge trainer.seed=1", "2026-12-02_03-00-00_multirun")
        assert wandb_names(job, "mine") == ("loss=hinge trainer.seed=1", "mine")
        with open_dict(hydra_cfg):
            hydra_cfg.mode = RunMode.RUN
        HydraConfig.instance().set_config(OmegaConf.create({"hydra": hydra_cfg}))
        assert wandb_names(tmp_path / "2026-12-02_03-00-00_dcgan", None) == ("2026-12-02_03-00-00_dcgan", None)
    finally:
        HydraConfig.instance().cfg = saved
