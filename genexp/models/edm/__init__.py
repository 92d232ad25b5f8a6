"""EDM (Karras et al. 2022): preconditioning and losses (precond.py), the SongUNet denoisers of its
CIFAR-10 presets (unet.py), the Heun / Euler / stochastic samplers (sampler.py)."""
