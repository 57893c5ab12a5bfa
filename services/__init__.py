"""The 18 services; each package registers itself as a run target (see coder.runner.registry)."""
