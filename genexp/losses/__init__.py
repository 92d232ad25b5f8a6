"""GAN objectives (pure functions of D's logits) and regularizers of D."""
