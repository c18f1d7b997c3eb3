"""Batches for Φ^GHN: a target (person, frame, camera) image with n reference images of the same
person in other frames, assembled on the host from a multi-view video split held in memory
(`imphmr_jax.data.multiview_video.People`).

A batch (B targets, n references, images H×W) holds:
  image (B, H, W, 3) float32 in [0, 1], the person composited on the background colour;
  mask (B, H, W) float32 {0, 1}; K (B, 3, 3); R (B, 3, 3); t (B, 3) (world -> camera);
  pose (B, 24, 3) world axis-angle; betas (B, NB); transl (B, 3);
  ref_image (B, n, H, W, 3) composited likewise; ref_K, ref_R, ref_t, ref_pose, ref_transl with
  a (B, n) lead.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from imphmr_jax.data import multiview_video
from imphmr_jax.data.multiview_video import People, sample_triplets  # noqa: F401 - re-exported

TARGET_KEYS = ("image", "mask", "K", "R", "t", "pose", "betas", "transl")
REF_KEYS = ("ref_image", "ref_K", "ref_R", "ref_t", "ref_pose", "ref_transl")
BATCH_KEYS = TARGET_KEYS + REF_KEYS


def load_split(config, split: str) -> People:
    """The config's multi-view video dataset split (config.data: name, builder_config,
    data_dir, builder_options, image_size), built on first use."""
    d = config.data
    return multiview_video.load_people(
        d.name, builder_config=d.builder_config or None, split=split,
        data_dir=os.path.expanduser(d.data_dir), builder_options=dict(d.builder_options),
        build_if_missing=True, image_size=d.image_size or None, lazy=bool(d.lazy_images),
        progress=True)


def composite(images_uint8, masks, background) -> np.ndarray:
    """Images (..., H, W, 3) uint8 -> float32 [0, 1] with the person on the background colour."""
    img = np.asarray(images_uint8, np.float32) / 255.0
    m = np.asarray(masks, np.float32)[..., None]
    return img * m + np.asarray(background, np.float32) * (1.0 - m)


def assemble(people: People, triplets: np.ndarray, background) -> dict:
    """Host batch (see the module docstring) for triplets (B, 1 + n) of record indices
    [target, ref_1, ..., ref_n]."""
    tgt, refs = triplets[:, 0], triplets[:, 1:]
    mask = np.asarray(people.masks[tgt] > 0, np.float32)
    out = {
        "image": composite(people.images[tgt], mask, background),
        "mask": mask,
        "K": people.K[tgt].astype(np.float32), "R": people.R[tgt].astype(np.float32),
        "t": people.t[tgt].astype(np.float32), "pose": people.pose[tgt].astype(np.float32),
        "betas": people.betas[tgt].astype(np.float32),
        "transl": people.transl[tgt].astype(np.float32),
        "ref_image": composite(people.images[refs], people.masks[refs] > 0, background),
        "ref_K": people.K[refs].astype(np.float32), "ref_R": people.R[refs].astype(np.float32),
        "ref_t": people.t[refs].astype(np.float32),
        "ref_pose": people.pose[refs].astype(np.float32),
        "ref_transl": people.transl[refs].astype(np.float32),
    }
    return out


class TripletBatches:
    """An endless, resumable iterator of host batches: batch k draws its triplets with
    numpy's generator seeded by (seed, k), so `get_state`/`set_state` (the batch counter) resume
    the same sequence after a restart."""

    def __init__(self, people: People, batch_size: int, *, n_refs: int = 2,
                 same_camera: bool = False, seed: int = 0, background=(0.0, 0.0, 0.0)):
        self.people, self.batch_size = people, int(batch_size)
        self.n_refs, self.same_camera = int(n_refs), bool(same_camera)
        self.seed, self.background = int(seed), tuple(background)
        self.count = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        rng = np.random.default_rng((self.seed, self.count))
        self.count += 1
        triplets = sample_triplets(rng, self.people, self.batch_size, n_refs=self.n_refs,
                                   same_camera=self.same_camera)
        return assemble(self.people, triplets, self.background)

    def get_state(self) -> dict:
        return {"count": self.count, "seed": self.seed}

    def set_state(self, state: dict) -> None:
        self.count = int(state["count"])


def gather_pixels(image, pixels) -> jax.Array:
    """Values of `image` (H, W, C) at pixel centres `pixels` (R, 2) = (col + 0.5, row + 0.5)."""
    h, w = image.shape[:2]
    col = jnp.clip(jnp.floor(pixels[:, 0]).astype(jnp.int32), 0, w - 1)
    row = jnp.clip(jnp.floor(pixels[:, 1]).astype(jnp.int32), 0, h - 1)
    return image[row, col]


def patch_pixels(key, mask, num_patches: int, size: int) -> jax.Array:
    """Pixel centres (num_patches · size², 2) of square patches whose top-left corners are drawn
    so that each patch lies in the image and its centre in the mask's bounding box (row-major
    inside each patch)."""
    h, w = mask.shape
    rows = jnp.any(mask, axis=1)
    cols = jnp.any(mask, axis=0)
    idx_r, idx_c = jnp.arange(h), jnp.arange(w)
    r0 = jnp.min(jnp.where(rows, idx_r, h))
    r1 = jnp.max(jnp.where(rows, idx_r, -1))
    c0 = jnp.min(jnp.where(cols, idx_c, w))
    c1 = jnp.max(jnp.where(cols, idx_c, -1))
    empty = r1 < r0
    r0, r1 = jnp.where(empty, 0, r0), jnp.where(empty, h - 1, r1)
    c0, c1 = jnp.where(empty, 0, c0), jnp.where(empty, w - 1, c1)
    kr, kc = jax.random.split(key)
    half = size // 2
    cr = jax.random.randint(kr, (num_patches,), r0, r1 + 1)
    cc = jax.random.randint(kc, (num_patches,), c0, c1 + 1)
    top = jnp.clip(cr - half, 0, h - size)
    left = jnp.clip(cc - half, 0, w - size)
    dy, dx = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")
    rr = top[:, None, None] + dy
    cc_ = left[:, None, None] + dx
    return jnp.stack([cc_, rr], axis=-1).reshape(-1, 2).astype(jnp.float32) + 0.5
