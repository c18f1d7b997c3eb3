"""ImpHMR in JAX/Flax: single-image human mesh recovery through an implicit feature field."""
__version__ = "0.1.0"
