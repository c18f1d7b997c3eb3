"""Rendering: mesh rasterizer and volume rendering."""
from imphmr_jax.render import volume
