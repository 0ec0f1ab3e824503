"""The oracle study: sweeps, learning rates, results, the knee study and its report."""
