"""Single-view generation (the ``synthetic_humans`` dataset): one person per image at a varied
position and size, sometimes truncated by the frame, covered by occluders or 2D-only."""
from __future__ import annotations

import dataclasses
from typing import Iterator, NamedTuple, Optional

import numpy as np

from imphmr_jax.data import pose_sampler
from imphmr_jax.data.synthetic.appearance import (Appearance, Background, Look,
                                                  sample_appearance, sample_background,
                                                  sample_occluders)
from imphmr_jax.data.synthetic.config import (KIND_SINGLE, SyntheticConfig, sample_rng,
                                              uniform_deg)
from imphmr_jax.data.synthetic.placement import (camera_pose_labels, intrinsics,
                                                 look_at_rotation, place_people)
from imphmr_jax.data.synthetic.records import Labels, make_record, progress_bar
from imphmr_jax.data.synthetic.renderer import (Rendered, get_renderer, pad_rows,
                                                render_in_batches, stack_rows)
from imphmr_jax.data.synthetic.rotations import set_yaw


@dataclasses.dataclass
class Scene:
    """Host-side random draws of one single-view record (everything but the geometry fit).

    pose_body (24, 3) axis-angle (global orientation in the body's y-up frame); betas (10,);
    cam_rot (3, 3) world -> camera rotation; focal (px); fill (the larger box side / image side);
    truncated, trunc_side (0 left, 1 right, 2 top, 3 bottom), trunc_frac; place (2,) uniforms;
    occluded; two_d_only; appearance, background; rng: the record's generator, positioned after
    these draws (it draws the occluders once the person is placed); occluders (2, 14): the rows
    rendered, set by :func:`generate_batches`.
    """

    pose_body: np.ndarray
    betas: np.ndarray
    cam_rot: np.ndarray
    focal: float
    fill: float
    truncated: bool
    trunc_side: int
    trunc_frac: float
    place: np.ndarray
    occluded: bool
    two_d_only: bool
    appearance: Appearance
    background: Background
    rng: np.random.Generator
    occluders: Optional[np.ndarray] = None


class Batch(NamedTuple):
    """One batch of :func:`generate_batches`: the records, the renderer's raw outputs and the
    scenes (with their occluders)."""

    records: list
    rendered: Rendered
    scenes: list


def sample_scene(config: SyntheticConfig, split: str, index: int) -> Scene:
    """Host-side random draws of single-view record ``index`` of ``split``."""
    rng = sample_rng(config, split, KIND_SINGLE, index)
    pose, _ = pose_sampler.sample_poses(rng, 1, config.weights)
    if rng.random() < config.facing_prob:
        pose[0, 0] = set_yaw(pose[0, 0], np.deg2rad(rng.uniform(*config.facing_range)))
    betas = rng.normal(0.0, 1.0, 10).astype(np.float32)
    rot = look_at_rotation(uniform_deg(rng, config.azimuth_range),
                           uniform_deg(rng, config.elevation_range),
                           uniform_deg(rng, config.roll_range))
    # Keyword order = draw order (the stream's order defines the data).
    return Scene(
        pose_body=pose[0], betas=betas, cam_rot=rot,
        focal=rng.uniform(*config.focal_range) * config.image_size,
        fill=rng.uniform(*config.fill_range),
        truncated=bool(rng.random() < config.truncation_prob),
        trunc_side=int(rng.integers(4)), trunc_frac=rng.uniform(*config.truncation_range),
        place=rng.random(2), occluded=bool(rng.random() < config.occluder_prob),
        # drawn on every split (one random stream), applied to training splits only: a test
        # split is fully labelled
        two_d_only=bool(rng.random() < config.fraction_2d_only) and split != "test",
        appearance=sample_appearance(rng, config),
        background=sample_background(rng, config.background_clutter),
        rng=rng)


def generate(config: SyntheticConfig, split: str, num: int, *, batch_size: int = 32,
             progress: bool = True) -> Iterator[dict]:
    """Yield ``num`` single-view records (schema.RECORD_FIELDS) of ``split``, in index order.

    Each record: a person of the configured body in a sampled pose and shape, camera, clothes,
    light and background; labels as the real datasets (see the package doc and ``make_record``):
    keypoints_2d = projected SPIN-49 joints (conf 1 inside the image), joints_3d = camera-frame
    SPIN GT-24 joints, pose (camera-frame global orientation), betas, intrinsics, cam_t, full
    silhouette mask, SPIN box; imgname b'synthetic/<split>/<index:06d>'.
    """
    if num < 0 or batch_size < 1:
        raise ValueError(f"generate needs num >= 0 and batch_size >= 1, got {num}, {batch_size}")
    with progress_bar(num, progress, f"synthetic {split}") as bar:
        for batch in generate_batches(config, split, num, batch_size=batch_size):
            yield from batch.records
            bar.update(len(batch.records))


def generate_batches(config: SyntheticConfig, split: str, num: int, *,
                     batch_size: int = 32) -> Iterator[Batch]:
    """What :func:`generate` yields, one :class:`Batch` at a time, with the renderer's raw outputs
    (image, mask, occluded, background) and the scenes (their ``occluders`` set)."""
    renderer = get_renderer(config.body)
    size = config.image_size
    for start in range(0, num, batch_size):
        idx = list(range(start, min(start + batch_size, num)))
        scenes = [sample_scene(config, split, i) for i in idx]
        get = lambda key: np.array([getattr(s, key) for s in scenes])  # noqa: E731
        rot, pose_body, betas = get("cam_rot"), get("pose_body"), get("betas")
        zeros = np.zeros((len(idx), 3))
        # The body frame is the world frame: only the global orientation changes.
        pose_cam, _ = camera_pose_labels(rot, zeros, pose_body, zeros, zeros)
        verts, joints = renderer.forward(pad_rows(pose_cam, batch_size),
                                         pad_rows(betas, batch_size))
        verts, joints = verts[: len(idx)], joints[: len(idx)]
        j0 = joints[:, 0]
        focal = get("focal")
        placed = place_people(verts - j0[:, None], focal, get("fill"), get("truncated"),
                              get("trunc_side"), get("trunc_frac"), get("place"), config)
        cam_t = (placed.root - j0).astype(np.float32)
        verts_cam = verts + cam_t[:, None]
        joints_cam = joints + cam_t[:, None]
        intr = intrinsics(focal, size)
        looks = []
        for k, s in enumerate(scenes):
            box = np.clip(placed.box.at(k), 0, size)
            s.occluders = sample_occluders(s.rng, s.occluded, box, size)
            looks.append(Look(s.appearance, s.background, s.occluders))
        rendered = render_in_batches(renderer, verts_cam, intr, stack_rows(looks), size,
                                     batch_size)
        records = [make_record(config, rendered.image[k], rendered.mask[k],
                               Labels(joints_cam[k], intr[k], pose_cam[k], betas[k], cam_t[k]),
                               f"synthetic/{split}/{i:06d}", two_d_only=s.two_d_only)
                   for k, (i, s) in enumerate(zip(idx, scenes))]
        yield Batch(records, rendered, scenes)
