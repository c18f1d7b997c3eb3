"""Multi-view video generation (``synthetic_humans/multiview_video``): each person performs a
smooth motion clip of T frames seen by a ring of K calibrated, fixed look-at cameras, like the
ZJU-MoCap capture rig. People are procedurally textured by default (the builder config's
:data:`MULTIVIEW_VIDEO_DEFAULTS`), so that a person looks the same in every frame and view and has
local detail to match, which is what a generalizable human NeRF learns from.

Draws of person p of split s (determinism as in the package doc; nothing here shares a stream
with the other configs):

* motion and look: :func:`.video.sample_clip` (key poses of one family slerped every
  ``video_key_interval`` frames, yaw turning at a constant rate, a straight ground trajectory;
  shape; appearance incl. the texture) on the video stream of the split label
  ``f"{s}/multiview_video"``, so the clip of multiview_video person p is never the ``video``
  config's clip p; the clip's own camera draws are not used;
* the camera ring and the per-view backgrounds: the ``KIND_MULTIVIEW_VIDEO`` stream of (s, p).

Cameras: view k looks at the clip's mean root from azimuth az0 + 2 pi k / K (+- 10 degrees) at its
own elevation (``multiview_elevation_range``), roll (``roll_range``) and focal length
(``focal_range``), at one distance per view fitted so that every frame of the clip fits in the
view's ``fill_range`` half-extent around the image centre. Cameras are fixed over the clip;
intrinsics are [f, f, S/2, S/2]. No occluders, no truncation, no 2D-only records.
"""
from __future__ import annotations

import io
import math
import os
from typing import Iterator, NamedTuple, Optional

import jax
import numpy as np
from PIL import Image

from imphmr_jax.data.synthetic.appearance import Background, Look, sample_background
from imphmr_jax.data.synthetic.config import (KIND_MULTIVIEW_VIDEO, SyntheticConfig, sample_rng,
                                              uniform_deg)
from imphmr_jax.data.synthetic.placement import (camera_pose_labels, fit_depth, intrinsics,
                                                 look_at_rotation)
from imphmr_jax.data.synthetic.records import Labels, Variant, make_record, progress_bar
from imphmr_jax.data.synthetic.renderer import (forward_in_batches, get_renderer,
                                                render_in_batches)
from imphmr_jax.data.synthetic.video import sample_clip

# SyntheticConfig fields the ``multiview_video`` builder config sets unless the build overrides
# them: textured people over plain gradient backgrounds (ZJU-MoCap is used with its background
# masked out); upright motion families, as ZJU-MoCap's capture (arm swings, kicks, twirls,
# stretches, warm-ups; nobody sits or lies); and motion that changes pose within a few frames (a
# frame every 0.1 s, a new key pose every 5 frames), so that a person's other frames show other
# poses.
MULTIVIEW_VIDEO_DEFAULTS = {
    "texture": "procedural", "background_clutter": 0.0, "video_fps": 10.0,
    "video_key_interval": 5,
    "pose_weights": (("standing", 0.25), ("walking", 0.2), ("reaching", 0.25),
                     ("crouching", 0.1), ("articulation", 0.2)),
}
_AZIMUTH_JITTER_DEG = 10.0


class Ring(NamedTuple):
    """The fixed cameras of one person: rot (K, 3, 3) and trans (K, 3) world -> camera, focal (K,)
    pixels, backgrounds (a Background stacked to K), noise_seeds (T, K) uint32 of each image's
    grain."""

    rot: np.ndarray
    trans: np.ndarray
    focal: np.ndarray
    backgrounds: Background
    noise_seeds: np.ndarray


def motion_split(split: str) -> str:
    """The split label whose video stream gives multiview_video people their motion and look."""
    return f"{split}/multiview_video"


def _sample_ring(config: SyntheticConfig, split: str, person: int, num_views: int,
                 num_frames: int, world_v: np.ndarray, target: np.ndarray) -> Ring:
    """Cameras of person ``person``: (T, V, 3) world vertices of every frame, (3,) look-at
    target."""
    rng = sample_rng(config, split, KIND_MULTIVIEW_VIDEO, person)
    size = config.image_size
    az0 = rng.uniform(0, 2 * np.pi)
    rots, trans, focals, backgrounds = [], [], [], []
    points = world_v.reshape(-1, 3) - target
    for k in range(num_views):
        az = az0 + 2 * np.pi * k / num_views + math.radians(
            rng.uniform(-_AZIMUTH_JITTER_DEG, _AZIMUTH_JITTER_DEG))
        rot = look_at_rotation(az, uniform_deg(rng, config.multiview_elevation_range),
                               uniform_deg(rng, config.roll_range))
        focal = rng.uniform(*config.focal_range) * size
        # One distance per view: every frame must fit in the wanted half-extent.
        d = fit_depth((points @ rot.T)[None], np.array([focal]),
                      np.array([rng.uniform(*config.fill_range) * size / 2]), size,
                      config.distance_range, centred=True)[0]
        rots.append(rot)
        trans.append(-rot @ target + np.array([0.0, 0.0, d]))
        focals.append(focal)
        backgrounds.append(sample_background(rng, config.background_clutter))
    seeds = rng.integers(2**32, size=(num_frames, num_views)).astype(np.uint32)
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *backgrounds)
    return Ring(np.stack(rots), np.stack(trans), np.array(focals), stacked, seeds)


def generate_multiview_video(config: SyntheticConfig, split: str, num_people: int,
                             num_frames: int, num_views: int, *, batch_size: int = 32,
                             progress: bool = True) -> Iterator[dict]:
    """Yield num_people * num_frames * num_views records, person by person, frame by frame, view
    by view (record index = (p * T + t) * K + k).

    World: y up, metres, the person's feet on y = 0 every frame, the root moving along the clip's
    ground trajectory (as :func:`.video.generate_video`). Records carry schema.VARIANT_FIELDS:
    sequence = person p, frame = t, view = k, extrinsics [R | t] world -> camera (fixed per view),
    pose_world (the clip's pose at t), transl_world; pose / cam_t / joints / keypoints are that
    view's camera-frame labels; betas per person. The person's appearance (and texture) is the same
    in every record; each view has its own background; the grain differs per image.
    imgname b'synthetic_multiview_video/<split>/p<person:06d>_f<frame:04d>_v<view:02d>'.
    """
    if num_people < 0 or num_frames < 1 or num_views < 1:
        raise ValueError(f"generate_multiview_video needs num_people >= 0, num_frames >= 1 and "
                         f"num_views >= 1, got {num_people}, {num_frames}, {num_views}")
    renderer = get_renderer(config.body)
    size = config.image_size
    total = num_people * num_frames * num_views
    with progress_bar(total, progress, f"synthetic multiview_video {split}") as bar:
        for p in range(num_people):
            clip = sample_clip(config, motion_split(split), p, num_frames)
            pose_w = clip.pose_world
            betas = np.repeat(clip.betas[None], num_frames, 0)
            verts, joints = forward_in_batches(renderer, pose_w, betas, batch_size)
            j0 = joints[:, 0]
            transl_w = np.stack([clip.ground[:, 0] - j0[:, 0], -verts[..., 1].min(1),
                                 clip.ground[:, 1] - j0[:, 2]], -1)
            world_v = verts + transl_w[:, None]
            world_j = joints + transl_w[:, None]
            ring = _sample_ring(config, split, p, num_views, num_frames, world_v,
                                world_j[:, 0].mean(0))
            # Records in (frame, view) order.
            t_idx = np.repeat(np.arange(num_frames), num_views)
            k_idx = np.tile(np.arange(num_views), num_frames)
            rot, trans = ring.rot[k_idx], ring.trans[k_idx]
            pose_cam, cam_t = camera_pose_labels(rot, trans, pose_w[t_idx], transl_w[t_idx],
                                                 j0[t_idx])
            intr = intrinsics(ring.focal, size)[k_idx]
            no_occluders = np.zeros((2, 14), np.float32)
            for s in range(0, len(t_idx), batch_size):
                rows = np.arange(s, min(s + batch_size, len(t_idx)))
                t_r, k_r = t_idx[rows], k_idx[rows]
                verts_cam = (np.einsum("nij,nvj->nvi", rot[rows], world_v[t_r])
                             + trans[rows][:, None]).astype(np.float32)
                joints_cam = (np.einsum("nij,nvj->nvi", rot[rows], world_j[t_r])
                              + trans[rows][:, None])
                looks = [Look(clip.appearance._replace(noise_seed=ring.noise_seeds[t, k]),
                              jax.tree.map(lambda x, k=k: x[k], ring.backgrounds), no_occluders)
                         for t, k in zip(t_r, k_r)]
                look = jax.tree.map(lambda *xs: np.stack(xs), *looks)
                rendered = render_in_batches(renderer, verts_cam, intr[rows], look, size,
                                             batch_size)
                for n, r in enumerate(rows):
                    t, k = int(t_idx[r]), int(k_idx[r])
                    labels = Labels(joints_cam[n], intr[r], pose_cam[r], betas[t], cam_t[r])
                    variant = Variant(
                        sequence=p, frame=t, view=k,
                        extrinsics=np.concatenate([ring.rot[k], ring.trans[k][:, None]], 1),
                        pose_world=pose_w[t].reshape(-1), transl_world=transl_w[t])
                    yield make_record(config, rendered.image[n], rendered.mask[n], labels,
                                      f"synthetic_multiview_video/{split}/p{p:06d}_f{t:04d}"
                                      f"_v{k:02d}", variant=variant)
                    bar.update(1)


def multiview_video_figure(path: Optional[str] = "docs/multiview_video_samples.png", *,
                           config: Optional[SyntheticConfig] = None, person: int = 0,
                           num_views: int = 4, num_frames: int = 11, frames=(0, 5, 10),
                           zoom: int = 6, batch_size: int = 32) -> np.ndarray:
    """The figure of one multiview_video person: rows = ``frames``, columns = the ``num_views``
    cameras, and on the right a ``zoom``x nearest-neighbour enlargement of a square (a quarter of
    the image side, outlined in yellow) on the torso in the first frame and view, showing the
    procedural texture's local detail. Returns the (H, W, 3) uint8 figure and writes it as a
    256-colour PNG to ``path`` (unless None).

    Generated with (about a minute on a 2-core CPU)::

        python -m imphmr_jax.data.synthetic \
            --multiview-video-figure docs/multiview_video_samples.png

    ``config`` defaults to ``SyntheticConfig(image_size=256, body='default', seed=0,
    **MULTIVIEW_VIDEO_DEFAULTS)``.
    """
    from imphmr_jax.data import draw  # figures only

    if config is None:
        config = SyntheticConfig(image_size=256, body="default", seed=0,
                                 **MULTIVIEW_VIDEO_DEFAULTS)
    recs = [r for r in generate_multiview_video(config, "train", person + 1, num_frames,
                                                num_views, batch_size=batch_size,
                                                progress=False)
            if r["sequence"] == person and r["frame"] in frames]
    decode = lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))  # noqa: E731
    tiles = [decode(r["image"]) for r in recs]
    pad = 2
    panel = draw.grid(tiles, len(frames), num_views, pad=pad)
    size = config.image_size
    side = max(8, size // 4)
    mask = np.asarray(Image.open(io.BytesIO(recs[0]["mask"]))) > 127
    rows, cols = np.nonzero(mask)
    cy = int(np.percentile(rows, 35)) if rows.size else size // 2  # upper body
    cx = int(np.median(cols)) if cols.size else size // 2
    y0 = int(np.clip(cy - side // 2, 0, size - side))
    x0 = int(np.clip(cx - side // 2, 0, size - side))
    big = np.repeat(np.repeat(tiles[0][y0:y0 + side, x0:x0 + side], zoom, 0), zoom, 1)
    height = max(panel.shape[0], big.shape[0] + 2 * pad)
    out = np.zeros((height, panel.shape[1] + big.shape[1] + pad, 3), np.uint8)
    out[:panel.shape[0], :panel.shape[1]] = panel
    off = (height - big.shape[0]) // 2
    out[off:off + big.shape[0], panel.shape[1]:panel.shape[1] + big.shape[1]] = big
    y, x = pad + y0, pad + x0  # the zoomed square, outlined on the first tile
    out[y, x:x + side] = out[y + side - 1, x:x + side] = (255, 255, 0)
    out[y:y + side, x] = out[y:y + side, x + side - 1] = (255, 255, 0)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # 256 colours, as the other sample figures (a quarter of the size, the detail stays)
        Image.fromarray(out).quantize(colors=256, dither=Image.Dither.NONE).save(path,
                                                                                 optimize=True)
    return out
