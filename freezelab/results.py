"""Summary of the oracle study (placeholder until the metrics land)."""


def collect(out, scale_name, scale) -> None:
    print("collect: not yet implemented")
