"""Tiny multi-view video people and a tiny GHN config shared by the GHN tests and their worker
process (tests/ghn_worker.py)."""
from __future__ import annotations

import numpy as np

SIZE, PEOPLE, FRAMES, VIEWS = 32, 2, 3, 3


def tiny_people(split: str = "train", people: int = PEOPLE, frames: int = FRAMES,
                views: int = VIEWS, size: int = SIZE, seed: int = 2):
    """People of the synthetic multi-view video generator, straight from its records (no TFDS)."""
    from imphmr_jax.data import multiview_video as mvv
    from imphmr_jax.data import synthetic as S
    from imphmr_jax.data.synthetic.multiview_video import generate_multiview_video
    cfg = S.SyntheticConfig(image_size=size, body="default-small", seed=seed,
                            **S.MULTIVIEW_VIDEO_DEFAULTS)
    recs = list(generate_multiview_video(cfg, split, people, frames, views, batch_size=16,
                                         progress=False))
    return mvv.load_people(recs)


def tiny_config(**train):
    """ghn_synthetic_config shrunk to test size (32-px images, 8-wide 𝓕, 8³ volume)."""
    from neuhmr_jax.config import ghn_synthetic_config
    c = ghn_synthetic_config()
    g = c.ghn
    g.feature_width = 8
    g.volume_resolution = 8
    g.volume_embedding = 16
    g.volume_widths = (16, 16)
    g.psi_width = 16
    g.pe_octaves = 3
    g.num_samples = 8
    g.chunk = 64
    d = c.data
    d.image_size = SIZE
    d.rays_per_image = 48
    d.dilation = 2
    t = c.train
    t.batch_size = 2 * int(train.pop("batch_multiple", 1))
    t.num_steps = 3
    t.warmup_steps = 0
    t.log_every = 1
    t.eval_every = 0
    t.checkpoint_every = 1
    t.progress = False
    for k, v in train.items():
        setattr(t, k, v)
    e = c.eval
    e.max_targets = 2
    e.periodic_max_targets = 1
    e.max_figures = 1
    return c


def params_npz(state) -> dict:
    import jax
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}
