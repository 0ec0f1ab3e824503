"""Training under a plan: freezing, adapters, the latent cache, the loop, baselines."""
