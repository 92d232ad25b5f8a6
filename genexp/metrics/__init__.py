"""Image metrics (FID, IS, KID, LPIPS) through torchmetrics, with offline feature extractors."""
