"""Φ^GHN on the synthetic multi-view video people (synthetic_humans/multiview_video, built on first
use under data.data_dir) at a CPU size: the small default body, 64-px images, a narrow 𝓕 and ψ, a
16³ skinning volume. Train and evaluate:

    python -m neuhmr_jax.train_ghn --config configs/neuhmr/ghn_synthetic.py --workdir out/ghn
    python -m neuhmr_jax.eval_ghn --workdir out/ghn

Sizes and their provenance: neuhmr_jax/config.py, docs/neuhmr.md.
"""
from neuhmr_jax.config import ghn_synthetic_config


def get_config():
    return ghn_synthetic_config()
