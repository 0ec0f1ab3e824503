"""The cost model: FLOPs and bytes from a model's shapes, device constants, the ledger."""
