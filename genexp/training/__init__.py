"""The loop every method trains in: steps, logging, samples, evaluation, checkpoints."""
