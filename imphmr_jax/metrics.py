"""Evaluation metrics. For now ESV (supp. 6.3); MPJPE / PA-MPJPE / PVE will join here.

ESV, the Entanglement between Shape and Viewing direction: for one image, infer β_φ from every
azimuth φ = 0°, 1°, ..., 359°; σ_i is the (population, 1/360) standard deviation of coefficient i
over φ; ESV = (1/10) Σ_i σ_i. Lower means shape and viewing direction are better disentangled.
"""
from __future__ import annotations

import numpy as np
import jax.numpy as jnp

ESV_NUM_VIEWS = 360  # 0°..359° in 1° steps


def esv(betas_over_phi):
    """Per-sample ESV from shape predictions over the φ sweep.

    Args:
      betas_over_phi: (N, 360, 10) (any (N, V, K) works: std over V with 1/V, mean over K).
    Returns:
      (N,) ESV in the units of β.
    """
    betas_over_phi = jnp.asarray(betas_over_phi)
    return jnp.mean(jnp.std(betas_over_phi, axis=-2), axis=-1)


def esv_phis(num_views=ESV_NUM_VIEWS):
    """(num_views,) azimuths in radians, 0°, 1°, ... (the sweep of supp. 6.3)."""
    return jnp.deg2rad(jnp.arange(num_views, dtype=jnp.float32))


def esv_of_model(betas_fn, images, chunk_size=60, num_views=ESV_NUM_VIEWS):
    """ESV of a model: run it over the 360 views in chunks of views and reduce.

    Args:
      betas_fn: (images (N, H, W, 3), phis (N, V) radians) -> betas (N, V, 10), e.g.
        `lambda x, p: model.apply(variables, x, p, False)['betas']` (jit it once; every chunk has the
        same V so it compiles once).
      images: (N, H, W, 3).
      chunk_size: views per call (must divide num_views; memory grows with N·chunk_size).
    Returns:
      (N,) ESV.
    """
    if num_views % chunk_size:
        raise ValueError(f"chunk_size {chunk_size} must divide num_views {num_views}")
    n = images.shape[0]
    phis = esv_phis(num_views)
    chunks = [np.asarray(betas_fn(images, jnp.broadcast_to(phis[i:i + chunk_size],
                                                           (n, chunk_size))))
              for i in range(0, num_views, chunk_size)]
    return esv(np.concatenate(chunks, axis=1))
