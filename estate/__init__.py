"""Skydd's core: the model of the estate it manages (the inventory, its loader and network plan),
secret references, where Skydd keeps its state (settings), the canonical JSON that digests and
signatures cover, and the root of every error. It imports no other Skydd package."""
