"""Test and benchmark helpers (PyTorch oracles, random weights); not needed at runtime."""
