"""The model layer: architectures, loading, tokenising and the data sets."""
