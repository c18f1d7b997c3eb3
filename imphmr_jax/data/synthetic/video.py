"""Video generation: smooth motion clips (key poses interpolated by slerp, a root trajectory on
the ground, a fixed or slowly orbiting camera)."""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import jax
import numpy as np

from imphmr_jax.data import pose_sampler
from imphmr_jax.data.synthetic import rotations
from imphmr_jax.data.synthetic.appearance import (Appearance, Background, Look,
                                                  sample_appearance, sample_background,
                                                  sample_occluders)
from imphmr_jax.data.synthetic.config import (KIND_VIDEO, SyntheticConfig, sample_rng,
                                              uniform_deg)
from imphmr_jax.data.synthetic.placement import (camera_pose_labels, fit_depth, intrinsics,
                                                 look_at_rotation, projected_box)
from imphmr_jax.data.synthetic.records import Labels, Variant, make_record, progress_bar
from imphmr_jax.data.synthetic.renderer import (forward_in_batches, get_renderer,
                                                render_in_batches)


@dataclasses.dataclass
class Clip:
    """Host-side draws of one clip of T frames.

    pose_world (T, 24, 3) axis-angle; ground (T, 2) root (x, z) on the ground plane, metres;
    betas (10,); family (pose family name); azimuth, elevation, roll (radians) and orbit_rate
    (rad/s, 0 = fixed camera) of the look-at camera; focal (px); fill (half-extent around the
    image centre / half the image side); times (T,) seconds; occluded; appearance, background;
    rng: the clip's generator, positioned after these draws (it draws the occluders).
    """

    pose_world: np.ndarray
    ground: np.ndarray
    betas: np.ndarray
    family: str
    azimuth: float
    elevation: float
    roll: float
    orbit_rate: float
    focal: float
    fill: float
    times: np.ndarray
    occluded: bool
    appearance: Appearance
    background: Background
    rng: np.random.Generator


def sample_clip(config: SyntheticConfig, split: str, clip: int, num_frames: int) -> Clip:
    """Host-side draws of clip ``clip``. Key poses of one family every video_key_interval frames,
    slerped; the global orientation is key 0's, turned about world y at a constant yaw rate;
    walking clips move along the facing direction, others drift in a random direction."""
    rng = sample_rng(config, split, KIND_VIDEO, clip)
    _, fam = pose_sampler.sample_poses(rng, 1, config.weights)
    family = pose_sampler.FAMILIES[int(fam[0])]
    interval = int(config.video_key_interval)
    n_keys = max(2, -(-(num_frames - 1) // interval) + 1)
    keys = pose_sampler.sample_family(rng, family, n_keys).astype(np.float64)
    poses = rotations.slerp_poses(keys, num_frames, interval)
    dt = 1.0 / config.video_fps
    yaw_rate = math.radians(rng.uniform(-1, 1) * config.video_yaw_rate)
    times = np.arange(num_frames) * dt
    poses[:, 0] = rotations.turn_about_vertical(keys[0, 0], yaw_rate * times)
    speed = rng.uniform(*config.video_root_speed)
    if family == "walking":  # along the facing direction (body +z) on the ground plane
        facing = rotations.forward_axis(keys[0, 0])
        direction = np.array([facing[0], facing[2]])
        direction = direction / max(np.linalg.norm(direction), 1e-9)
    else:  # a slower drift in a random direction
        a = rng.uniform(0, 2 * np.pi)
        direction = 0.5 * np.array([math.cos(a), math.sin(a)])
    ground = speed * direction[None] * times[:, None]  # (T, 2) x, z
    orbit = rng.random() < config.video_orbit_prob
    # Keyword order = draw order (the stream's order defines the data).
    return Clip(
        pose_world=poses.astype(np.float32), ground=ground,
        betas=rng.normal(0.0, 1.0, 10).astype(np.float32), family=family,
        azimuth=rng.uniform(0, 2 * np.pi),
        elevation=uniform_deg(rng, config.multiview_elevation_range),
        roll=uniform_deg(rng, config.roll_range),
        orbit_rate=(math.radians(rng.uniform(*config.video_orbit_rate)) * rng.choice([-1, 1])
                    if orbit else 0.0),
        focal=rng.uniform(*config.focal_range) * config.image_size,
        fill=rng.uniform(*config.fill_range), times=times,
        occluded=bool(rng.random() < config.occluder_prob),
        appearance=sample_appearance(rng, config),
        background=sample_background(rng, config.background_clutter),
        rng=rng)


def generate_video(config: SyntheticConfig, split: str, num_clips: int, num_frames: int, *,
                   batch_size: int = 32, progress: bool = True) -> Iterator[dict]:
    """Yield num_clips * num_frames records of smooth motion clips, frame by frame.

    World: y up, the person's feet on y = 0 every frame (the vertical translation follows the
    lowest vertex), root moving along a straight ground trajectory (see sample_clip). Camera: fixed
    (looking at the clip's mean root position, distance fitted so every frame fits) or orbiting
    the current root at a constant rate (distance fitted over all frames); intrinsics constant
    per clip. Records carry VARIANT_FIELDS: sequence = clip, frame = t, view = 0, extrinsics,
    pose_world, transl_world. Look, background and occluders (screen-fixed) are per clip.
    imgname b'synthetic_video/<split>/c<clip:06d>_f<frame:04d>'.
    """
    if num_clips < 0 or num_frames < 1:
        raise ValueError(f"generate_video needs num_clips >= 0 and num_frames >= 1, got "
                         f"{num_clips}, {num_frames}")
    renderer = get_renderer(config.body)
    size = config.image_size
    with progress_bar(num_clips * num_frames, progress, f"synthetic video {split}") as bar:
        for c in range(num_clips):
            clip = sample_clip(config, split, c, num_frames)
            pose_w = clip.pose_world
            betas = np.repeat(clip.betas[None], num_frames, 0)
            verts, joints = forward_in_batches(renderer, pose_w, betas, batch_size)
            j0 = joints[:, 0]
            transl_w = np.stack([clip.ground[:, 0] - j0[:, 0], -verts[..., 1].min(1),
                                 clip.ground[:, 1] - j0[:, 2]], -1)
            world_v = verts + transl_w[:, None]
            world_j = joints + transl_w[:, None]
            roots = world_j[:, 0]
            focal = np.full(num_frames, clip.focal)
            rots = np.stack([look_at_rotation(clip.azimuth + clip.orbit_rate * t,
                                              clip.elevation, clip.roll)
                             for t in clip.times])
            targets = roots if clip.orbit_rate else np.repeat(roots.mean(0, keepdims=True),
                                                              num_frames, 0)
            rel = np.einsum("nij,nvj->nvi", rots, world_v - targets[:, None])
            # One distance for the clip: every frame must fit in the wanted half-extent.
            d_all = fit_depth(rel, focal, np.full(num_frames, clip.fill * size / 2), size,
                              config.distance_range, centred=True)
            d = float(d_all.max())
            trans = -np.einsum("nij,nj->ni", rots, targets) + np.array([0.0, 0.0, d])
            pose_cam, cam_t = camera_pose_labels(rots, trans, pose_w, transl_w, j0)
            verts_cam = np.einsum("nij,nvj->nvi", rots, world_v) + trans[:, None]
            verts_cam = verts_cam.astype(np.float32)
            joints_cam = np.einsum("nij,nvj->nvi", rots, world_j) + trans[:, None]
            intr = intrinsics(focal, size)
            b = projected_box(verts_cam, intr)  # the box over all frames: screen-fixed occluders
            box = np.clip([b.umin.min(), b.umax.max(), b.vmin.min(), b.vmax.max()], 0, size)
            occluders = sample_occluders(clip.rng, clip.occluded, box, size)
            look = jax.tree.map(lambda x: np.repeat(np.asarray(x)[None], num_frames, 0),
                                Look(clip.appearance, clip.background, occluders))
            rendered = render_in_batches(renderer, verts_cam, intr, look, size, batch_size)
            for t in range(num_frames):
                labels = Labels(joints_cam[t], intr[t], pose_cam[t], betas[t], cam_t[t])
                variant = Variant(sequence=c, frame=t, view=0,
                                  extrinsics=np.concatenate([rots[t], trans[t][:, None]], 1),
                                  pose_world=pose_w[t].reshape(-1), transl_world=transl_w[t])
                yield make_record(config, rendered.image[t], rendered.mask[t], labels,
                                  f"synthetic_video/{split}/c{c:06d}_f{t:04d}", variant=variant)
                bar.update(1)
