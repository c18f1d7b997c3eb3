"""NeuHMR in JAX/Flax: video SMPL refinement against a frozen generalizable human NeRF."""
__version__ = "0.1.0"
