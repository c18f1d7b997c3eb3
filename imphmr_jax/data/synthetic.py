"""Synthetic humans: the default body rendered in sampled poses, shapes, clothes, lights, cameras
and backgrounds, with exact labels in the record layout of :mod:`imphmr_jax.data.schema`.

Three generators share one batched, jitted renderer:

* :func:`generate` — single images (the ``synthetic_humans`` dataset): one person per image at a
  varied position and size, sometimes truncated by the frame or covered by occluders.
* :func:`generate_multiview` — K calibrated cameras around the same posed person.
* :func:`generate_video` — smooth motion clips (key poses interpolated by slerp, a root trajectory,
  a fixed or slowly orbiting camera).

Frames and conventions (shared with the rest of the project):

* SMPL/world frame: y up, the rest body faces +z, metres. Camera frame as SPIN: x right, y DOWN,
  z forward. A world -> camera rotation ``R`` maps world axes to camera axes (``X_c = R X_w + t``);
  the camera looking at a person's front from +z has ``R = diag(1, -1, -1)`` (= R_x(pi)).
* The stored ``pose`` has the global orientation in the CAMERA frame (``R @ R_world_global``) and
  ``cam_t`` is chosen so that, exactly, camera-frame vertices =
  ``smpl_jax.forward(body, pose, betas).vertices + cam_t``. Because SMPL rotates the global
  orientation about the rest root joint ``J0`` (not the origin), ``cam_t = R (J0 + transl_w) + t -
  J0`` rather than ``R transl_w + t``.
* Intrinsics ``[fx, fy, cx, cy]`` in pixels of the stored square image, principal point at the
  image centre, pixel centres at +0.5 (see :mod:`imphmr_jax.geometry.camera`).
* Images are RGB; the mask PNG is single-channel, 255 on the person's full silhouette (occluders
  ignored), 0 elsewhere.

Determinism: each record is a function of ``(config, split, index)`` only — its host-side random
draws come from ``numpy.random.default_rng([seed, split code, generator kind, index])`` — so
record i is the same whatever ``num`` or ``batch_size`` (up to floating-point reduction order in
the batched rendering). The 'train' split uses code 0, 'test' code 1, 'validation' code 2 and any
other name the CRC32 of its name, so splits never share a random stream.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
import zlib
from functools import partial
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

import smpl_jax
from imphmr_jax.data import pose_sampler, schema
from imphmr_jax.render import rasterize as _raster
from imphmr_jax.render import shading as _shading

NUM_SPIN = 49
# SPIN-49 joints within forward(..., extra_joints=('spin49',)).joints
SPIN_SLICE = slice(24, 24 + NUM_SPIN)
_KIND_SINGLE, _KIND_MULTIVIEW, _KIND_VIDEO = 0, 1, 2
_SPLIT_CODES = {"train": 0, "test": 1, "validation": 2}
_NEAR = 0.05  # rasterizer near plane, metres
_MIN_DEPTH = 0.3  # nearest vertex depth allowed when placing a person, metres

# ----------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Everything that defines a synthetic dataset (hashable; records are a function of it).

    Attributes:
      image_size: stored square image side, pixels.
      body: ``smpl_jax.load`` name or path, used for the images AND the labels.
      pose_weights: () for ``pose_sampler.DEFAULT_WEIGHTS``, else ((family, weight), ...).
      fraction_2d_only: probability that a single-view sample loses its 3D labels (has_smpl =
        has_pose_3d = has_camera = 0; pose, betas, joints_3d, cam_t and intrinsics zeroed; 2D
        keypoints, box and mask kept), like the real 2D-only datasets. Training splits only: the
        test split is always fully labelled.
      truncation_prob: probability that a single-view person is pushed partly out of the frame.
      truncation_range: fraction (of the person's projected box side) pushed outside the image.
      occluder_prob: probability of 1-2 random shapes drawn over part of the person.
      focal_range: focal length range in units of image_size (focal px = factor * image_size);
        1.0 is a ~53 degree field of view, 2.5 a ~23 degree one.
      fill_range: the person's larger projected box side as a fraction of the image side
        (single view; multi-view / video: the half-extent around the image centre).
      distance_range: allowed root depth, metres (the fill is given up where it would need more).
      elevation_range: camera elevation above the person's root, degrees (positive looks down).
      azimuth_range: single-view camera azimuth, degrees.
      background_clutter: 0..1, the procedural background's pattern opacity and shape frequency
        (1 = full variety, 0 = plain gradients).
      facing_prob, facing_range: single view: with probability facing_prob the body's yaw is
        redrawn uniformly in facing_range (degrees, 0 = facing the camera), as most photographs
        show people roughly facing the camera; otherwise the sampler's uniform yaw is kept (back
        and side views). Without this prior a small model cannot tell front from back at low
        resolution and its global orientation, and with it the body pose, stays near chance.
      roll_range: camera roll about its optical axis, degrees.
      light_ambient_range, light_diffuse_range: Lambert shading weights.
      grain_range: per-pixel uniform noise amplitude added to the final image (0..1 units).
      image_format: 'jpeg' or 'png'; jpeg_quality: Pillow JPEG quality.
      video_fps: frame rate of generate_video, Hz.
      video_key_interval: frames between key poses in a clip.
      video_root_speed: root speed range on the ground plane, m/s.
      video_yaw_rate: maximum |body yaw rate|, degrees/s.
      video_orbit_prob: probability that a clip's camera orbits (else it is fixed).
      video_orbit_rate: orbit speed range, degrees/s.
      multiview_elevation_range: per-view elevation range, degrees.
      seed: the train split's seed; other splits derive their streams from it (see module doc).
    """

    image_size: int = 256
    body: str = "default"
    facing_prob: float = 0.75
    background_clutter: float = 1.0
    facing_range: tuple = (-75.0, 75.0)
    pose_weights: tuple = ()
    fraction_2d_only: float = 0.2
    truncation_prob: float = 0.15
    truncation_range: tuple = (0.15, 0.45)
    occluder_prob: float = 0.25
    focal_range: tuple = (1.0, 2.5)
    fill_range: tuple = (0.5, 0.9)
    distance_range: tuple = (1.2, 20.0)
    elevation_range: tuple = (-15.0, 35.0)
    azimuth_range: tuple = (-20.0, 20.0)
    roll_range: tuple = (-12.0, 12.0)
    light_ambient_range: tuple = (0.25, 0.5)
    light_diffuse_range: tuple = (0.45, 0.8)
    grain_range: tuple = (0.0, 0.04)
    image_format: str = "jpeg"
    jpeg_quality: int = 95
    video_fps: float = 30.0
    video_key_interval: int = 30
    video_root_speed: tuple = (0.0, 0.8)
    video_yaw_rate: float = 30.0
    video_orbit_prob: float = 0.5
    video_orbit_rate: tuple = (5.0, 20.0)
    multiview_elevation_range: tuple = (-10.0, 30.0)
    seed: int = 0

    def __post_init__(self):
        if self.image_size < 16:
            raise ValueError(f"SyntheticConfig.image_size must be >= 16, got {self.image_size}")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError(f"SyntheticConfig.image_format must be 'jpeg' or 'png', got "
                             f"{self.image_format!r}")
        for name in ("fraction_2d_only", "truncation_prob", "occluder_prob", "video_orbit_prob",
                     "facing_prob", "background_clutter"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"SyntheticConfig.{name} must be in [0, 1], got {v}")
        for name in ("truncation_range", "focal_range", "fill_range", "distance_range",
                     "elevation_range", "azimuth_range", "roll_range", "light_ambient_range",
                     "light_diffuse_range", "grain_range", "video_root_speed", "video_orbit_rate",
                     "multiview_elevation_range", "facing_range"):
            v = tuple(getattr(self, name))
            if len(v) != 2 or not v[0] <= v[1]:
                raise ValueError(f"SyntheticConfig.{name} must be a (lo, hi) pair with lo <= hi, "
                                 f"got {v}")
        if self.focal_range[0] <= 0 or self.fill_range[0] <= 0 or self.distance_range[0] <= 0:
            raise ValueError("SyntheticConfig.focal_range, fill_range and distance_range must be "
                             "positive")
        if self.video_key_interval < 1:
            raise ValueError(f"SyntheticConfig.video_key_interval must be >= 1, got "
                             f"{self.video_key_interval}")
        if self.pose_weights:
            pose_sampler.sample_poses(np.random.default_rng(0), 1, dict(self.pose_weights))

    @property
    def weights(self) -> dict:
        return dict(self.pose_weights) if self.pose_weights else dict(pose_sampler.DEFAULT_WEIGHTS)


def split_code(split: str) -> int:
    """Integer folded into every random stream of a split ('train' 0, 'test' 1, 'validation' 2)."""
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string, got {split!r}")
    return _SPLIT_CODES.get(split, zlib.crc32(split.encode("utf-8")) + 16)


def sample_rng(config: SyntheticConfig, split: str, kind: int, index: int) -> np.random.Generator:
    """The host random stream of one record (kind 0) / person (1) / clip (2)."""
    return np.random.default_rng([int(config.seed) & 0xFFFFFFFF, split_code(split), kind,
                                  int(index)])


# ----------------------------------------------------------------------------- cameras


def set_yaw(global_orient, yaw) -> np.ndarray:
    """Turn a body-frame global orientation (axis-angle, y up) about the vertical axis so that the
    body's forward axis (+z) points at azimuth `yaw` (radians; 0 = +z, towards a camera at
    azimuth 0); a body whose forward axis is vertical (lying face up/down) keeps its yaw."""
    root = Rotation.from_rotvec(np.asarray(global_orient, np.float64))
    fwd = root.apply([0.0, 0.0, 1.0])
    if math.hypot(fwd[0], fwd[2]) < 1e-6:
        return np.asarray(global_orient, np.float32)
    turn = yaw - math.atan2(fwd[0], fwd[2])
    return (Rotation.from_rotvec([0.0, turn, 0.0]) * root).as_rotvec().astype(np.float32)


def look_at_rotation(azimuth, elevation, roll=0.0) -> np.ndarray:
    """World -> camera rotation (3, 3) of a camera on a sphere looking at its centre.

    The camera centre is at ``target + d (sin az cos el, sin el, cos az cos el)`` (world y up;
    angles in radians): azimuth 0, elevation 0 looks at the body's front from +z and gives
    ``diag(1, -1, -1)``; positive elevation is above, looking down. ``roll`` turns the image about
    the optical axis. With ``t = -R target + (0, 0, d)`` the target lands at camera (0, 0, d).
    """
    az, el = float(azimuth), float(elevation)
    centre_dir = np.array([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])
    z = -centre_dir
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])
    c, s = math.cos(roll), math.sin(roll)
    roll_z = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return roll_z @ rot


def camera_pose_labels(rot, trans, pose_world, transl_world, root_rest):
    """Camera-frame SMPL labels from a world pose and a world -> camera [R | t].

    Args:
      rot: (N, 3, 3), trans: (N, 3) world -> camera.
      pose_world: (N, 24, 3) axis-angle, global orientation in the world frame.
      transl_world: (N, 3) world translation (world vertices = forward(pose_world) + transl_world).
      root_rest: (N, 3) rest root joint J0 = forward(...).joints[:, 0] without translation.
    Returns:
      pose_cam (N, 24, 3) with the global orientation R @ R_world, and cam_t (N, 3) such that
      forward(pose_cam).vertices + cam_t = R (forward(pose_world).vertices + transl_world) + t.
    """
    rot = np.asarray(rot, np.float64)
    pose_cam = np.array(pose_world, np.float64, copy=True)
    glob = Rotation.from_matrix(rot) * Rotation.from_rotvec(pose_cam[:, 0])
    pose_cam[:, 0] = glob.as_rotvec()
    j0 = np.asarray(root_rest, np.float64)
    cam_t = np.einsum("nij,nj->ni", rot, j0 + transl_world) + trans - j0
    return pose_cam.astype(np.float32), cam_t.astype(np.float32)


def _project(points, intr):
    """(N, P, 3) camera points, (N, 4) intrinsics -> (N, P, 2) pixels, (N, P) depth (numpy)."""
    z = points[..., 2]
    safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
    u = intr[:, None, 0] * points[..., 0] / safe + intr[:, None, 2]
    v = intr[:, None, 1] * points[..., 1] / safe + intr[:, None, 3]
    return np.stack([u, v], -1), z


def _intrinsics(focal, size):
    """(N,) focal lengths -> (N, 4) float32 [f, f, size/2, size/2] (principal point centred)."""
    focal = np.asarray(focal, np.float64)
    half = np.full_like(focal, size / 2.0)
    return np.stack([focal, focal, half, half], -1).astype(np.float32)


def _box_at(rel, focal, root, size):
    """Projected box (umin, umax, vmin, vmax), each (N,), of root-relative points placed at root."""
    pts = rel + root[:, None, :]
    uv, _ = _project(pts, _intrinsics(focal, size))
    return uv[..., 0].min(1), uv[..., 0].max(1), uv[..., 1].min(1), uv[..., 1].max(1)


def _fit_depth(rel, focal, target, size, dist_range, centred: bool):
    """Root depth d (N,) giving a projected size ``target`` (pixels) with the root on the axis.

    centred=False: ``target`` is the larger box side; True: the largest distance of any point from
    the image centre (the person stays centred, as for look-at cameras). Fixed-point iterations
    (size ~ 1/d), then clipped to ``dist_range`` and to a nearest-vertex depth >= _MIN_DEPTH.
    """
    n = rel.shape[0]
    ext = np.maximum(np.ptp(rel[..., 0], 1), np.ptp(rel[..., 1], 1))
    if centred:
        ext = 2.0 * np.maximum(np.abs(rel[..., 0]).max(1), np.abs(rel[..., 1]).max(1))
        target = 2.0 * target
    d = np.maximum(focal * ext / target, _MIN_DEPTH - rel[..., 2].min(1) + 0.05)
    for _ in range(4):
        root = np.stack([np.zeros(n), np.zeros(n), d], -1)
        u0, u1, v0, v1 = _box_at(rel, focal, root, size)
        c = size / 2
        s = (2.0 * np.maximum.reduce([c - u0, u1 - c, c - v0, v1 - c]) if centred
             else np.maximum(u1 - u0, v1 - v0))
        d = np.maximum(d * s / target, _MIN_DEPTH - rel[..., 2].min(1) + 0.05)
    d = np.clip(d, dist_range[0], dist_range[1])
    return np.maximum(d, _MIN_DEPTH - rel[..., 2].min(1))


# ----------------------------------------------------------------------------- appearance

# Skin tones (sRGB, 0..1) from light to deep; a sample interpolates between neighbours.
_SKIN_TONES = np.array([
    [0.98, 0.84, 0.74], [0.93, 0.75, 0.62], [0.85, 0.64, 0.50], [0.74, 0.53, 0.38],
    [0.60, 0.41, 0.28], [0.45, 0.30, 0.20], [0.32, 0.21, 0.15],
])
_HAIR = np.array([[0.05, 0.04, 0.03], [0.20, 0.13, 0.08], [0.40, 0.26, 0.14], [0.65, 0.50, 0.30],
                  [0.55, 0.25, 0.12], [0.60, 0.60, 0.60]])
_NEUTRALS = np.array([[0.05, 0.05, 0.06], [0.92, 0.92, 0.90], [0.45, 0.45, 0.47],
                      [0.10, 0.14, 0.30], [0.22, 0.32, 0.52], [0.40, 0.32, 0.22]])
# Body regions coloured independently: which region each SMPL joint's skinned vertices belong to.
REGIONS = ("skin", "hair", "shirt", "lower_sleeve", "trousers", "lower_leg", "shoes")
_JOINT_REGION = np.array([
    4, 4, 4, 2, 5, 5, 2, 6, 6, 2, 6, 6,  # pelvis hips spine1 knees spine2 ankles spine3 feet
    0, 2, 2, 0, 2, 2, 3, 3, 0, 0, 0, 0,  # neck collars head shoulders elbows wrists hands
])
_NUM_BG_SHAPES = 6
_NUM_OCCLUDERS = 2
_NUM_WAVES = 5


def _hsv_to_rgb(h, s, v):
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _random_color(rng, neutral_prob=0.35):
    if rng.random() < neutral_prob:
        c = _NEUTRALS[rng.integers(len(_NEUTRALS))] + rng.normal(0, 0.03, 3)
    else:
        c = _hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.25, 0.95))
    return np.clip(c, 0.0, 1.0)


def sample_appearance(rng: np.random.Generator, config: SyntheticConfig) -> dict:
    """Skin, hair and clothing colours per region, shirt stripes, light and grain for one person.

    Returns numpy arrays: region_colors (7, 3) in REGIONS order; stripe (4,) [on, frequency
    cycles/m along the rest-pose height, phase, long_sleeve]; stripe_color (3,); light (3,) unit
    direction towards the light in the camera frame; shade (3,) [ambient, diffuse, grain].
    """
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    k = min(int(t), len(_SKIN_TONES) - 2)
    skin = (1 - (t - k)) * _SKIN_TONES[k] + (t - k) * _SKIN_TONES[k + 1]
    skin = np.clip(skin * rng.uniform(0.95, 1.05) + rng.normal(0, 0.015, 3), 0, 1)
    hair = np.clip(_HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2), 0, 1)
    if rng.random() < 0.15:  # bald or very short hair
        hair = skin * 0.9
    shirt, trousers = _random_color(rng), _random_color(rng, neutral_prob=0.55)
    shoes = _random_color(rng, neutral_prob=0.7)
    long_sleeve = rng.random() < 0.5
    long_legs = rng.random() < 0.75
    colors = np.stack([skin, hair, shirt, shirt if long_sleeve else skin, trousers,
                       trousers if long_legs else skin, shoes])
    stripe = np.array([float(rng.random() < 0.3), rng.uniform(8.0, 30.0),
                       rng.uniform(0, 2 * np.pi), float(long_sleeve)])
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.4), -rng.uniform(0.4, 1.5)])
    light /= np.linalg.norm(light)
    shade = np.array([rng.uniform(*config.light_ambient_range),
                      rng.uniform(*config.light_diffuse_range), rng.uniform(*config.grain_range)])
    return {"region_colors": colors.astype(np.float32), "stripe": stripe.astype(np.float32),
            "stripe_color": _random_color(rng).astype(np.float32),
            "light": light.astype(np.float32),
            "shade": shade.astype(np.float32), "noise_seed": np.uint32(rng.integers(2**32))}


def _sample_shapes(rng, n, centre_lo, centre_hi, radius_lo, radius_hi, on_prob):
    """n random shapes in normalised image coordinates ([0, 1]^2, x right, y down).

    Each shape row: [cx, cy, rx, ry, angle, kind (0 ellipse, 1 rectangle, 2 triangle), on,
    stripe frequency (cycles per image side, 0 = plain)] + colour (3) + second colour (3).
    """
    rows = np.zeros((n, 14), np.float32)
    for i in range(n):
        c = rng.uniform(np.broadcast_to(centre_lo, (2,)), np.broadcast_to(centre_hi, (2,)))
        r = rng.uniform(radius_lo, radius_hi, 2)
        freq = rng.uniform(6, 30) if rng.random() < 0.3 else 0.0
        rows[i, :8] = [c[0], c[1], r[0], r[1], rng.uniform(0, np.pi), rng.integers(3),
                       float(rng.random() < on_prob), freq]
        rows[i, 8:11] = _random_color(rng, 0.2)
        rows[i, 11:14] = _random_color(rng, 0.2)
    return rows


def sample_background(rng: np.random.Generator, clutter: float = 1.0) -> dict:
    """Parameters of one procedural background.

    clutter in [0, 1] scales the pattern opacity and the probability of each shape (1 = the full
    procedural variety; 0 = a plain two-colour gradient). The random draws do not depend on it.

    A linear gradient between two colours, blended with a pattern (0 stripes, 1 checker,
    2 smooth noise from random plane waves, 3 none) and overlaid by up to 6 random shapes.
    Returns numpy arrays: colors (4, 3) [gradient a, gradient b, pattern a, pattern b];
    params (8,) [gradient angle, pattern kind, pattern frequency (cycles per side), pattern angle,
    pattern phase, pattern opacity, grain, unused]; waves (5, 3) [kx, ky, phase]; shapes (6, 14).
    """
    colors = np.stack([_random_color(rng, 0.3) for _ in range(4)])
    if rng.random() < 0.5:  # a softer gradient: the second colour near the first
        colors[1] = np.clip(colors[0] + rng.normal(0, 0.15, 3), 0, 1)
    params = np.array([rng.uniform(0, 2 * np.pi), rng.integers(4), rng.uniform(2, 16),
                       rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi),
                       clutter * rng.uniform(0.2, 0.9), rng.uniform(0, 0.05), 0.0])
    waves = np.concatenate([rng.normal(0, 4.0, (_NUM_WAVES, 2)),
                            rng.uniform(0, 2 * np.pi, (_NUM_WAVES, 1))], 1)
    shapes = _sample_shapes(rng, _NUM_BG_SHAPES, -0.1, 1.1, 0.04, 0.35, 0.45 * clutter)
    return {"bg_colors": colors.astype(np.float32), "bg_params": params.astype(np.float32),
            "bg_waves": waves.astype(np.float32), "bg_shapes": shapes}


def sample_occluders(rng: np.random.Generator, on: bool, box, size: int) -> np.ndarray:
    """(2, 14) occluder shapes (rows as for backgrounds) over the person's box.

    ``box`` = (umin, umax, vmin, vmax) in pixels (clipped to the image); the first shape is on when
    ``on``, the second half of those times; centres inside the box, radii 15-35% of its sides.
    """
    u0, u1, v0, v1 = (float(b) / size for b in box)
    w, h = max(u1 - u0, 1e-3), max(v1 - v0, 1e-3)
    shapes = _sample_shapes(rng, _NUM_OCCLUDERS, (u0 + 0.15 * w, v0 + 0.15 * h),
                            (u1 - 0.15 * w, v1 - 0.15 * h), 0.0, 0.0, 1.0)
    for i in range(_NUM_OCCLUDERS):
        shapes[i, 2] = rng.uniform(0.15, 0.35) * w
        shapes[i, 3] = rng.uniform(0.15, 0.35) * h
    shapes[:, 6] = [float(on), float(on and rng.random() < 0.5)]
    return shapes


# ----------------------------------------------------------------------------- the renderer


def _pixel_grid(size):
    c = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    return c[None, :], c[:, None]  # x (1, S), y (S, 1)


def _paint_shapes(image, shapes, size):
    """Paint (B, K, 14) shapes (see _sample_shapes) over (B, S, S, 3); also the (B, S, S) cover."""
    x, y = _pixel_grid(size)
    cover = jnp.zeros(image.shape[:3], bool)
    for k in range(shapes.shape[1]):
        s = shapes[:, k]
        g = lambda i: s[:, i, None, None]  # noqa: E731
        dx, dy = x - g(0), y - g(1)
        ca, sa = jnp.cos(g(4)), jnp.sin(g(4))
        lx, ly = ca * dx + sa * dy, -sa * dx + ca * dy
        qx, qy = lx / jnp.maximum(g(2), 1e-6), ly / jnp.maximum(g(3), 1e-6)
        kind = g(5)
        inside = jnp.where(kind < 0.5, qx * qx + qy * qy <= 1.0,
                           jnp.where(kind < 1.5, jnp.maximum(jnp.abs(qx), jnp.abs(qy)) <= 1.0,
                                     (qy <= 1.0) & (jnp.abs(qx) <= (qy + 1.0) * 0.5)))
        inside = inside & (g(6) > 0.5)
        stripe = (g(7) > 0) & (jnp.sin(2 * jnp.pi * g(7) * lx) > 0)
        color = jnp.where(stripe[..., None], s[:, None, None, 11:14], s[:, None, None, 8:11])
        image = jnp.where(inside[..., None], color, image)
        cover = cover | inside
    return image, cover


def _background(colors, params, waves, shapes, size):
    """(B, S, S, 3) procedural backgrounds in [0, 1] from sample_background's parameters."""
    x, y = _pixel_grid(size)
    p = lambda i: params[:, i, None, None]  # noqa: E731
    ga = p(0)
    t = jnp.clip(0.5 + (jnp.cos(ga) * (x - 0.5) + jnp.sin(ga) * (y - 0.5)), 0.0, 1.0)
    grad = (1 - t[..., None]) * colors[:, None, None, 0] + t[..., None] * colors[:, None, None, 1]
    pa = p(3)
    lx = jnp.cos(pa) * x + jnp.sin(pa) * y
    ly = -jnp.sin(pa) * x + jnp.cos(pa) * y
    f = p(2)
    stripes = jnp.sin(2 * jnp.pi * f * lx + p(4)) > 0
    checker = (jnp.sin(2 * jnp.pi * f * lx + p(4)) * jnp.sin(2 * jnp.pi * f * ly)) > 0
    wave = sum(jnp.sin(2 * jnp.pi * (waves[:, i, 0, None, None] * x
                                     + waves[:, i, 1, None, None] * y) + waves[:, i, 2, None, None])
               for i in range(waves.shape[1])) / math.sqrt(waves.shape[1])
    noise = jax.nn.sigmoid(3.0 * wave)
    kind = p(1)
    w = jnp.where(kind < 0.5, stripes.astype(jnp.float32),
                  jnp.where(kind < 1.5, checker.astype(jnp.float32), noise))
    w = w[..., None]
    pattern = (1 - w) * colors[:, None, None, 2] + w * colors[:, None, None, 3]
    alpha = jnp.where(kind > 2.5, 0.0, p(5))[..., None]
    image = (1 - alpha) * grad + alpha * pattern
    image, _ = _paint_shapes(image, shapes, size)
    return image


def _vertex_colors(mesh, region_colors, stripe, stripe_color):
    """(B, V, 3) albedo from (B, 7, 3) region colours, (B, 4) stripes, (B, 3) stripe colour."""
    rw = mesh["region_weights"]
    base = jnp.einsum("vr,brc->bvc", rw, region_colors)
    on, freq, phase, long_sleeve = (stripe[:, i, None] for i in range(4))
    band = (on > 0.5) & (jnp.sin(2 * jnp.pi * freq * mesh["rest_height"][None] + phase) > 0)
    shirt_w = rw[None, :, 2] + long_sleeve * rw[None, :, 3]
    delta = stripe_color[:, None, :] - region_colors[:, None, 2, :]
    base = base + jnp.where(band, shirt_w, 0.0)[..., None] * delta
    return jnp.clip(base * mesh["fabric"][None, :, None], 0.0, 1.0)


def _render_impl(mesh, verts_cam, intr, look, *, size, max_tiles):
    """Rasterize, shade over the background, paint occluders, add grain (all batched)."""
    faces = mesh["faces"]
    # The body is a closed, outward-wound mesh: culling back faces leaves the silhouette and the
    # visible surface unchanged and halves the rasterizer's work.
    frags = _raster.rasterize(verts_cam, faces, intr, size, size, near=_NEAR, max_tiles=max_tiles,
                              cull_backfaces=True)
    background = _background(look["bg_colors"], look["bg_params"], look["bg_waves"],
                             look["bg_shapes"], size)
    albedo = _vertex_colors(mesh, look["region_colors"], look["stripe"], look["stripe_color"])
    shade = look["shade"]
    image = _shading.shade(frags, verts_cam, faces, albedo, light=look["light"][:, None, None, :],
                           ambient=shade[:, 0, None, None], diffuse=shade[:, 1, None, None],
                           background=background)
    image, occluded = _paint_shapes(image, look["occluders"], size)
    keys = jax.vmap(jax.random.key)(look["noise_seed"])
    noise = jax.vmap(lambda k: jax.random.uniform(k, (size, size, 1), minval=-1.0,
                                                  maxval=1.0))(keys)
    grain = (shade[:, 2] + look["bg_params"][:, 6])[:, None, None, None]
    image = jnp.clip(image + grain * noise, 0.0, 1.0)
    to_u8 = lambda im: jnp.round(im * 255.0).astype(jnp.uint8)  # noqa: E731
    return {"image": to_u8(image), "mask": frags.mask, "occluded": occluded & frags.mask,
            "background": to_u8(background), "overflow": frags.overflow}


def _tile_need(faces, verts_cam, intr, *, size, tile=4):
    """Max over the batch of the tile slots the rasterizer needs (jitted required_tiles)."""
    tri = verts_cam[:, faces]
    umin, umax, vmin, vmax, front = _raster.clipped_screen_bbox(tri, intr, _NEAR)
    _, nj = _raster.pixel_range(umin, umax, size)
    _, ni = _raster.pixel_range(vmin, vmax, size)
    det = jnp.sum(tri[..., 0, :] * jnp.cross(tri[..., 1, :], tri[..., 2, :]), -1)
    live = front & (ni > 0) & (nj > 0) & (det < 0)  # as the rasterizer with cull_backfaces
    need = jnp.where(live, ((ni + tile - 1) // tile) * ((nj + tile - 1) // tile), 0)
    return jnp.max(jnp.sum(need, axis=1))


class SceneRenderer:
    """Batched, jitted rendering of posed bodies with clothes, light, background and occluders.

    One instance per body (see :func:`get_renderer`); it holds the per-vertex region weights
    (from the skinning weights), the rest-pose height used by shirt stripes, and a fixed per-vertex
    fabric brightness jitter.
    """

    def __init__(self, body: str):
        self.body_name = body
        self.model = smpl_jax.load(body)
        self.faces = jnp.asarray(self.model.faces, jnp.int32)
        weights = np.asarray(self.model.weights, np.float64)
        vt = np.asarray(self.model.v_template, np.float64)
        head = np.asarray(self.model.joint_template)[15]
        onehot = np.eye(len(REGIONS))[_JOINT_REGION]  # (24, R)
        region_w = weights @ onehot
        # Hair: the top of the head and the back of the skull.
        crown = vt[:, 1] > head[1] + 0.075
        back = (vt[:, 2] < head[2] - 0.02) & (vt[:, 1] > head[1] - 0.02)
        hair = (weights[:, 15] > 0.5) & (crown | back)
        region_w[hair, 1] += region_w[hair, 0]
        region_w[hair, 0] = 0.0
        region_w = region_w ** 4  # sharper borders between regions, still smooth
        region_w /= region_w.sum(1, keepdims=True)
        self.region_weights = jnp.asarray(region_w, jnp.float32)
        self.rest_height = jnp.asarray(vt[:, 1], jnp.float32)
        fabric = np.random.default_rng(1234).uniform(0.93, 1.07, vt.shape[0])
        self.fabric = jnp.asarray(fabric, jnp.float32)
        self._forward = jax.jit(partial(smpl_jax.forward, extra_joints=("spin49",)))
        # Mesh arrays travel as jit arguments (closing over them would bake large constants into
        # the program, which XLA then spends a long time folding).
        self._mesh = {"faces": self.faces, "region_weights": self.region_weights,
                      "rest_height": self.rest_height, "fabric": self.fabric}
        self._render = jax.jit(_render_impl, static_argnames=("size", "max_tiles"))
        self._tile_need = jax.jit(_tile_need, static_argnames=("size",))
        # Static tile budget per image size: the exact need of the first batch rounded up to a
        # power of two; a batch that overflows it is re-rendered with a larger budget (so the
        # budget only grows and jit recompiles rarely). Results do not depend on the budget.
        self._budget: dict = {}

    def vertex_colors(self, region_colors, stripe, stripe_color):
        """(B, V, 3) albedo: region colours blended by region weights, shirt stripes, fabric."""
        return _vertex_colors(self._mesh, jnp.asarray(region_colors), jnp.asarray(stripe),
                              jnp.asarray(stripe_color))

    def forward(self, pose, betas):
        """(B, 24, 3) axis-angle, (B, 10) -> numpy vertices (B, V, 3), joints (B, 73, 3)."""
        out = self._forward(self.model, jnp.asarray(pose, jnp.float32),
                            jnp.asarray(betas, jnp.float32))
        return np.asarray(out.vertices), np.asarray(out.joints)

    def render(self, verts_cam, intrinsics, look: dict, size: int) -> dict:
        """Render (B, V, 3) camera-frame vertices with (B, 4) intrinsics and stacked looks.

        ``look`` holds the stacked outputs of sample_appearance and sample_background plus
        'occluders' (B, 2, 14). Returns numpy: image (B, S, S, 3) uint8, mask (B, S, S) bool,
        occluded (B, S, S) bool (mask pixels under an occluder), background (B, S, S, 3) uint8,
        overflow (B,) int32 (always 0: an overflowing batch is re-rendered with a larger budget).
        """
        verts_cam = jnp.asarray(verts_cam, jnp.float32)
        intr = jnp.asarray(intrinsics, jnp.float32)
        look = {k: jnp.asarray(v) for k, v in look.items()}
        size = int(size)
        max_tiles = self._budget.get(size, 0)
        for attempt in range(2):
            if attempt or not max_tiles:
                need = int(self._tile_need(self.faces, verts_cam, intr, size=size))
                max_tiles = max(max_tiles, 1024, 1 << (need - 1).bit_length())
                self._budget[size] = max_tiles
            out = self._render(self._mesh, verts_cam, intr, look, size=size, max_tiles=max_tiles)
            out = jax.device_get(out)
            if not np.any(out["overflow"] != 0):
                return out
        raise RuntimeError(f"rasterizer overflow {out['overflow']} with max_tiles={max_tiles}")


_RENDERERS: dict = {}


def get_renderer(body: str) -> SceneRenderer:
    """A cached :class:`SceneRenderer` for ``body`` (compiled functions are reused)."""
    if body not in _RENDERERS:
        _RENDERERS[body] = SceneRenderer(body)
    return _RENDERERS[body]


# ----------------------------------------------------------------------------- labels


def encode_image(image: np.ndarray, config: SyntheticConfig) -> bytes:
    """(H, W, 3) uint8 -> JPEG (config.jpeg_quality) or PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    if config.image_format == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=int(config.jpeg_quality))
    else:
        Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def encode_mask(mask: np.ndarray) -> bytes:
    """(H, W) bool -> single-channel PNG, 255 on the person."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def decode_mask(data: bytes) -> np.ndarray:
    """Inverse of encode_mask: PNG bytes -> (H, W) bool."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data))) > 127


def keypoints_and_box(joints_cam, intrinsics, mask, size):
    """SPIN-49 keypoints (49, 3) and the SPIN box (center (2,), scale) of one sample.

    keypoints: the projection of the camera-frame SPIN joints (73-joint forward output rows
    24:73), confidence 1 where in front of the camera and inside [0, size)^2, else 0.
    Box: the union of the silhouette's pixel bbox and the confident keypoints, centre in pixels,
    scale = 1.2 * max side / 200 (SPIN); the whole image if neither exists.
    """
    spin = np.asarray(joints_cam, np.float64)[SPIN_SLICE]
    uv, z = _project(spin[None], np.asarray(intrinsics, np.float64)[None])
    uv, z = uv[0], z[0]
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < size) & (uv[:, 1] >= 0) & (uv[:, 1] < size)
    kp = np.concatenate([uv, inside[:, None].astype(np.float64)], 1).astype(np.float32)
    xs, ys = list(uv[inside, 0]), list(uv[inside, 1])
    rows, cols = np.nonzero(mask)
    if rows.size:
        xs += [cols.min(), cols.max() + 1.0]
        ys += [rows.min(), rows.max() + 1.0]
    if not xs:
        xs, ys = [0.0, float(size)], [0.0, float(size)]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32)
    scale = np.float32(1.2 * max(x1 - x0, y1 - y0) / 200.0)
    return kp, center, scale


def _stack(dicts):
    return {k: np.stack([d[k] for d in dicts]) for k in dicts[0]}


def _pad(arrays: dict, n: int) -> dict:
    """Pad every (m, ...) array to n rows by repeating the last (keeps compiled shapes fixed)."""
    out = {}
    for k, v in arrays.items():
        m = v.shape[0]
        out[k] = v if m == n else np.concatenate([v, np.repeat(v[-1:], n - m, 0)], 0)
    return out


def _render_rows(renderer, config, verts_cam, intr, look, batch_size):
    """Render N samples in fixed-size chunks of batch_size (the last one padded)."""
    n = verts_cam.shape[0]
    outs = []
    for s in range(0, n, batch_size):
        e = min(s + batch_size, n)
        chunk = _pad({"v": verts_cam[s:e], "k": intr[s:e],
                      **{f"l_{k}": v[s:e] for k, v in look.items()}}, batch_size)
        lk = {k[2:]: v for k, v in chunk.items() if k.startswith("l_")}
        out = renderer.render(chunk["v"], chunk["k"], lk, config.image_size)
        outs.append({k: v[: e - s] for k, v in out.items()})
    return {k: np.concatenate([o[k] for o in outs], 0) for k in outs[0]}


def _make_record(config, rendered, i, joints_cam, intr, pose_cam, betas, cam_t, imgname,
                 two_d_only=False, **variant):
    size = config.image_size
    kp, center, scale = keypoints_and_box(joints_cam, intr, rendered["mask"][i], size)
    j3d = np.concatenate([joints_cam[SPIN_SLICE][25:], np.ones((24, 1))], 1)
    rec = schema.empty_record(
        image=encode_image(rendered["image"][i], config), imgname=imgname, center=center,
        scale=scale, keypoints_2d=kp, joints_3d=j3d, pose=np.asarray(pose_cam).reshape(-1),
        betas=betas, has_smpl=1, has_pose_3d=1, mask=encode_mask(rendered["mask"][i]),
        has_mask=1, intrinsics=intr, cam_t=cam_t, has_camera=1, **variant)
    if two_d_only:
        for name in ("joints_3d", "pose", "betas", "cam_t", "intrinsics"):
            rec[name] = np.zeros_like(rec[name])
        for name in ("has_smpl", "has_pose_3d", "has_camera"):
            rec[name] = np.int32(0)
        for name in ("pose_world", "transl_world"):
            if name in rec:
                rec[name] = np.zeros_like(rec[name])
    return rec


def _progress(total, enabled, desc):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="img")


def _uniform_deg(rng, rng_pair):
    return math.radians(rng.uniform(*rng_pair))


# ----------------------------------------------------------------------------- single view


def sample_scene(config: SyntheticConfig, split: str, index: int) -> dict:
    """Host-side random draws of single-view record ``index`` (everything but the geometry fit).

    Returns a dict: pose_body (24, 3) (global orientation in the body's y-up frame), betas (10,),
    cam_rot (3, 3) world -> camera rotation, focal (px), fill, truncated (bool), trunc_side
    (0 left, 1 right, 2 top, 3 bottom), trunc_frac, place (2,) uniforms, occluded (bool),
    two_d_only (bool), look (appearance + background arrays), rng (the record's generator,
    positioned after these draws; used for the occluders once the person is placed).
    """
    rng = sample_rng(config, split, _KIND_SINGLE, index)
    pose, _ = pose_sampler.sample_poses(rng, 1, config.weights)
    if rng.random() < config.facing_prob:
        pose[0, 0] = set_yaw(pose[0, 0], np.deg2rad(rng.uniform(*config.facing_range)))
    betas = rng.normal(0.0, 1.0, 10).astype(np.float32)
    rot = look_at_rotation(_uniform_deg(rng, config.azimuth_range),
                           _uniform_deg(rng, config.elevation_range),
                           _uniform_deg(rng, config.roll_range))
    scene = {
        "pose_body": pose[0], "betas": betas, "cam_rot": rot,
        "focal": rng.uniform(*config.focal_range) * config.image_size,
        "fill": rng.uniform(*config.fill_range),
        "truncated": bool(rng.random() < config.truncation_prob),
        "trunc_side": int(rng.integers(4)), "trunc_frac": rng.uniform(*config.truncation_range),
        "place": rng.random(2), "occluded": bool(rng.random() < config.occluder_prob),
        # drawn on every split (one random stream), applied to training splits only: a test
        # split is fully labelled
        "two_d_only": bool(rng.random() < config.fraction_2d_only) and split != "test",
        "look": {**sample_appearance(rng, config),
                 **sample_background(rng, config.background_clutter)},
    }
    scene["rng"] = rng
    return scene


def place_people(rel, focal, fill, truncated, side, frac, place, config):
    """Root camera positions (N, 3) for root-relative camera-frame vertices rel (N, V, 3).

    Depth from the wanted fill; the box is then placed uniformly inside the image with a 2%
    margin (centred if it cannot fit), or, for truncated samples, with ``frac`` of its side beyond
    image side ``side`` (0 left, 1 right, 2 top, 3 bottom). Placement is refined on the exact
    perspective projection. Returns root (N, 3) and the projected boxes (4, N).
    """
    size = float(config.image_size)
    n = rel.shape[0]
    margin = 0.02 * size
    rel = rel[:, ::3]  # a third of the vertices bound the box well within the margin
    d = _fit_depth(rel, focal, fill * size, size, config.distance_range, centred=False)
    truncated = np.asarray(truncated, bool)
    rows = np.arange(n)
    axis = np.where(np.asarray(side) < 2, 0, 1)  # the truncated image axis (0 u, 1 v)
    before = np.asarray(side) % 2 == 0  # pushed out through the left / top side
    shift = np.zeros((n, 2))  # image-plane shift of the root from the image centre, pixels
    for it in range(3):
        root = np.stack([shift[:, 0] * d / focal, shift[:, 1] * d / focal, d], -1)
        u0, u1, v0, v1 = _box_at(rel, focal, root, size)
        box_lo, box_hi = np.stack([u0, v0], 1), np.stack([u1, v1], 1)
        lo, hi = margin - box_lo, size - margin - box_hi  # shifts keeping the box inside
        if it == 0:
            step = lo + place * (hi - lo)
        else:  # the residual of the previous placement (perspective is not a pure shift)
            step = np.maximum(lo, 0.0) + np.minimum(hi, 0.0)
        step = np.where(lo <= hi, step, 0.5 * (lo + hi))  # too large: centred
        ext = (box_hi - box_lo)[rows, axis]
        out = np.where(before, -frac * ext - box_lo[rows, axis],
                       size + frac * ext - box_hi[rows, axis])
        step[rows[truncated], axis[truncated]] = out[truncated]
        shift = shift + step
    root = np.stack([shift[:, 0] * d / focal, shift[:, 1] * d / focal, d], -1)
    return root, np.stack(_box_at(rel, focal, root, size))


def generate(config: SyntheticConfig, split: str, num: int, *, batch_size: int = 32,
             progress: bool = True) -> Iterator[dict]:
    """Yield ``num`` single-view records (schema.RECORD_FIELDS) of ``split``, in index order.

    Each record: a person of the configured body in a sampled pose and shape, camera, clothes,
    light and background; labels as the real datasets (see module doc and ``_make_record``):
    keypoints_2d = projected SPIN-49 joints (conf 1 inside the image), joints_3d = camera-frame
    SPIN GT-24 joints, pose (camera-frame global orientation), betas, intrinsics, cam_t, full
    silhouette mask, SPIN box; imgname b'synthetic/<split>/<index:06d>'.
    """
    if num < 0 or batch_size < 1:
        raise ValueError(f"generate needs num >= 0 and batch_size >= 1, got {num}, {batch_size}")
    with _progress(num, progress, f"synthetic {split}") as bar:
        for records, _, _ in generate_batches(config, split, num, batch_size=batch_size):
            yield from records
            bar.update(len(records))


def generate_batches(config: SyntheticConfig, split: str, num: int, *, batch_size: int = 32):
    """What :func:`generate` yields, one batch at a time, with the renderer's raw outputs.

    Yields (records, rendered, scenes): the batch's records, the renderer's dict (image, mask,
    occluded, background; see SceneRenderer.render) and the sample_scene dicts (with the
    'occluders' (2, 14) rows they were rendered with added).
    """
    renderer = get_renderer(config.body)
    size = config.image_size
    for start in range(0, num, batch_size):
        idx = list(range(start, min(start + batch_size, num)))
        scenes = [sample_scene(config, split, i) for i in idx]
        rot = np.stack([s["cam_rot"] for s in scenes])
        pose_body = np.stack([s["pose_body"] for s in scenes])
        betas = np.stack([s["betas"] for s in scenes])
        zeros = np.zeros((len(idx), 3))
        pose_cam, _ = camera_pose_labels(rot, zeros, pose_body, zeros, zeros)
        padded = _pad({"p": pose_cam, "b": betas}, batch_size)
        verts, joints = renderer.forward(padded["p"], padded["b"])
        verts, joints = verts[: len(idx)], joints[: len(idx)]
        j0 = joints[:, 0]
        get = lambda key: np.array([s[key] for s in scenes])  # noqa: E731
        root, boxes = place_people(verts - j0[:, None], get("focal"), get("fill"),
                                   get("truncated"), get("trunc_side"), get("trunc_frac"),
                                   np.stack([s["place"] for s in scenes]), config)
        cam_t = (root - j0).astype(np.float32)
        verts_cam = verts + cam_t[:, None]
        joints_cam = joints + cam_t[:, None]
        focal = get("focal")
        intr = _intrinsics(focal, size)
        looks = []
        for k, s in enumerate(scenes):
            box = np.clip(boxes[:, k], 0, size)
            s["occluders"] = sample_occluders(s["rng"], s["occluded"], box, size)
            looks.append({**s["look"], "occluders": s["occluders"]})
        rendered = _render_rows(renderer, config, verts_cam, intr, _stack(looks), batch_size)
        records = [_make_record(config, rendered, k, joints_cam[k], intr[k], pose_cam[k], betas[k],
                                cam_t[k], f"synthetic/{split}/{i:06d}", two_d_only=s["two_d_only"])
                   for k, (i, s) in enumerate(zip(idx, scenes))]
        yield records, rendered, scenes


# ----------------------------------------------------------------------------- multi-view


def _world_placement(verts_w, joints_w):
    """World translation (N, 3) putting the root above the origin and the lowest vertex on y=0."""
    j0 = joints_w[:, 0]
    return np.stack([-j0[:, 0], -verts_w[..., 1].min(1), -j0[:, 2]], -1)


def generate_multiview(config: SyntheticConfig, split: str, num_people: int, num_views: int, *,
                       batch_size: int = 32, progress: bool = True) -> Iterator[dict]:
    """Yield num_people * num_views records: K calibrated cameras around each posed person.

    Person p stands with its root above the world origin (lowest vertex on y = 0) in a sampled
    pose; view k looks at the root from azimuth az0 + 2 pi k / K (+- 10 degrees jitter) at its own
    elevation, roll, focal length and distance (fitted so the person fills ``fill_range`` of the
    half image around the centre). Records carry schema.VARIANT_FIELDS: sequence = p, view = k,
    frame = 0, extrinsics [R | t] world -> camera, pose_world, transl_world; pose/cam_t/joints are
    that view's camera-frame labels. Appearance and background are per person (the background is
    a per-view draw). No truncation; occluders per view with occluder_prob; no 2D-only samples.
    imgname b'synthetic_multiview/<split>/p<person:06d>_v<view:02d>'.
    """
    if num_people < 0 or num_views < 1:
        raise ValueError(f"generate_multiview needs num_people >= 0 and num_views >= 1, got "
                         f"{num_people}, {num_views}")
    renderer = get_renderer(config.body)
    size = config.image_size
    per_chunk = max(1, batch_size // num_views)
    with _progress(num_people * num_views, progress, f"synthetic multiview {split}") as bar:
        for start in range(0, num_people, per_chunk):
            people = list(range(start, min(start + per_chunk, num_people)))
            rngs = [sample_rng(config, split, _KIND_MULTIVIEW, p) for p in people]
            pose_w = np.concatenate([pose_sampler.sample_poses(r, 1, config.weights)[0]
                                     for r in rngs])
            betas = np.stack([r.normal(0.0, 1.0, 10) for r in rngs]).astype(np.float32)
            padded = _pad({"p": pose_w, "b": betas}, batch_size)
            verts, joints = renderer.forward(padded["p"], padded["b"])
            verts, joints = verts[: len(people)], joints[: len(people)]
            transl_w = _world_placement(verts, joints)
            rows = []  # per view: (person slot, R, t, focal, look)
            for slot, r in enumerate(rngs):
                app = sample_appearance(r, config)
                az0 = r.uniform(0, 2 * np.pi)
                target = joints[slot, 0] + transl_w[slot]
                vw = verts[slot] + transl_w[slot]
                for k in range(num_views):
                    az = az0 + 2 * np.pi * k / num_views + math.radians(r.uniform(-10, 10))
                    rot = look_at_rotation(az, _uniform_deg(r, config.multiview_elevation_range),
                                           _uniform_deg(r, config.roll_range))
                    focal = r.uniform(*config.focal_range) * size
                    rel = (vw - target) @ rot.T
                    d = _fit_depth(rel[None], np.array([focal]),
                                   np.array([r.uniform(*config.fill_range) * size / 2]), size,
                                   config.distance_range, centred=True)[0]
                    trans = -rot @ target + np.array([0.0, 0.0, d])
                    look = {**app, **sample_background(r, config.background_clutter)}
                    occluded = r.random() < config.occluder_prob
                    rows.append((slot, k, rot, trans, focal, look, occluded, r))
            slots = np.array([row[0] for row in rows])
            rot = np.stack([row[2] for row in rows])
            trans = np.stack([row[3] for row in rows])
            pose_cam, cam_t = camera_pose_labels(rot, trans, pose_w[slots], transl_w[slots],
                                                 joints[slots, 0])
            world_v = verts[slots] + transl_w[slots][:, None]
            world_j = joints[slots] + transl_w[slots][:, None]
            verts_cam = np.einsum("nij,nvj->nvi", rot, world_v) + trans[:, None]
            verts_cam = verts_cam.astype(np.float32)
            joints_cam = np.einsum("nij,nvj->nvi", rot, world_j) + trans[:, None]
            focal = np.array([row[4] for row in rows])
            intr = _intrinsics(focal, size)
            uv, _ = _project(verts_cam, intr)
            boxes = np.stack([uv[..., 0].min(1), uv[..., 0].max(1), uv[..., 1].min(1),
                              uv[..., 1].max(1)])
            looks = []
            for n, row in enumerate(rows):
                looks.append({**row[5], "occluders": sample_occluders(
                    row[7], bool(row[6]), np.clip(boxes[:, n], 0, size), size)})
            rendered = _render_rows(renderer, config, verts_cam, intr, _stack(looks), batch_size)
            for n, row in enumerate(rows):
                p, k = people[row[0]], row[1]
                ext = np.concatenate([rot[n], trans[n][:, None]], 1)
                yield _make_record(
                    config, rendered, n, joints_cam[n], intr[n], pose_cam[n], betas[row[0]],
                    cam_t[n], f"synthetic_multiview/{split}/p{p:06d}_v{k:02d}",
                    sequence=p, frame=0, view=k, extrinsics=ext,
                    pose_world=pose_w[row[0]].reshape(-1), transl_world=transl_w[row[0]])
                bar.update(1)


# ----------------------------------------------------------------------------- video


def _slerp_poses(keys, num_frames, interval):
    """Joint rotations of frames 0..T-1 from key poses every ``interval`` frames.

    keys: (M, 24, 3) axis-angle; frame t between keys m = t // interval and m + 1 is
    R_m exp(s log(R_m^T R_{m+1})) with s the smoothstep of the fraction (zero velocity at keys).
    Returns (T, 24, 3) axis-angle.
    """
    t = np.arange(num_frames)
    m = np.minimum(t // interval, keys.shape[0] - 2)
    s = np.clip((t - m * interval) / interval, 0.0, 1.0)
    s = s * s * (3.0 - 2.0 * s)
    ra = Rotation.from_rotvec(keys[m].reshape(-1, 3))
    rb = Rotation.from_rotvec(keys[m + 1].reshape(-1, 3))
    delta = (ra.inv() * rb).as_rotvec() * np.repeat(s, 24)[:, None]
    return (ra * Rotation.from_rotvec(delta)).as_rotvec().reshape(num_frames, 24, 3)


def sample_clip(config: SyntheticConfig, split: str, clip: int, num_frames: int) -> dict:
    """Host-side draws of clip ``clip``: world poses (T, 24, 3), root ground velocity, betas,
    camera motion, look and the clip's rng. Key poses of one family every video_key_interval
    frames, slerped; the global orientation is key 0's, turned about world y at a constant yaw
    rate; walking clips move along the facing direction, others drift in a random direction."""
    rng = sample_rng(config, split, _KIND_VIDEO, clip)
    _, fam = pose_sampler.sample_poses(rng, 1, config.weights)
    family = pose_sampler.FAMILIES[int(fam[0])]
    interval = int(config.video_key_interval)
    n_keys = max(2, -(-(num_frames - 1) // interval) + 1)
    keys = pose_sampler.sample_family(rng, family, n_keys).astype(np.float64)
    poses = _slerp_poses(keys, num_frames, interval)
    dt = 1.0 / config.video_fps
    yaw_rate = math.radians(rng.uniform(-1, 1) * config.video_yaw_rate)
    times = np.arange(num_frames) * dt
    glob0 = Rotation.from_rotvec(keys[0, 0])
    yaw = Rotation.from_euler("y", (yaw_rate * times)[:, None])
    poses[:, 0] = (yaw * glob0).as_rotvec()
    speed = rng.uniform(*config.video_root_speed)
    if family == "walking":  # along the facing direction (body +z) on the ground plane
        facing = glob0.apply([0.0, 0.0, 1.0])
        direction = np.array([facing[0], facing[2]])
        direction = direction / max(np.linalg.norm(direction), 1e-9)
    else:  # a slower drift in a random direction
        a = rng.uniform(0, 2 * np.pi)
        direction = 0.5 * np.array([math.cos(a), math.sin(a)])
    ground = speed * direction[None] * times[:, None]  # (T, 2) x, z
    orbit = rng.random() < config.video_orbit_prob
    return {
        "pose_world": poses.astype(np.float32), "ground": ground,
        "betas": rng.normal(0.0, 1.0, 10).astype(np.float32), "family": family,
        "azimuth": rng.uniform(0, 2 * np.pi),
        "elevation": _uniform_deg(rng, config.multiview_elevation_range),
        "roll": _uniform_deg(rng, config.roll_range),
        "orbit_rate": (math.radians(rng.uniform(*config.video_orbit_rate)) * rng.choice([-1, 1])
                       if orbit else 0.0),
        "focal": rng.uniform(*config.focal_range) * config.image_size,
        "fill": rng.uniform(*config.fill_range), "times": times,
        "occluded": bool(rng.random() < config.occluder_prob),
        "look": {**sample_appearance(rng, config),
                 **sample_background(rng, config.background_clutter)},
        "rng": rng,
    }


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
    with _progress(num_clips * num_frames, progress, f"synthetic video {split}") as bar:
        for c in range(num_clips):
            clip = sample_clip(config, split, c, num_frames)
            pose_w = clip["pose_world"]
            betas = np.repeat(clip["betas"][None], num_frames, 0)
            verts_l, joints_l = [], []
            for s in range(0, num_frames, batch_size):
                e = min(s + batch_size, num_frames)
                p = _pad({"p": pose_w[s:e], "b": betas[s:e]}, batch_size)
                v, j = renderer.forward(p["p"], p["b"])
                verts_l.append(v[: e - s])
                joints_l.append(j[: e - s])
            verts, joints = np.concatenate(verts_l), np.concatenate(joints_l)
            j0 = joints[:, 0]
            transl_w = np.stack([clip["ground"][:, 0] - j0[:, 0], -verts[..., 1].min(1),
                                 clip["ground"][:, 1] - j0[:, 2]], -1)
            world_v = verts + transl_w[:, None]
            world_j = joints + transl_w[:, None]
            roots = world_j[:, 0]
            focal = np.full(num_frames, clip["focal"])
            rots = np.stack([look_at_rotation(clip["azimuth"] + clip["orbit_rate"] * t,
                                              clip["elevation"], clip["roll"])
                             for t in clip["times"]])
            targets = roots if clip["orbit_rate"] else np.repeat(roots.mean(0, keepdims=True),
                                                                 num_frames, 0)
            rel = np.einsum("nij,nvj->nvi", rots, world_v - targets[:, None])
            # One distance for the clip: every frame must fit in the wanted half-extent.
            d_all = _fit_depth(rel, focal, np.full(num_frames, clip["fill"] * size / 2), size,
                               config.distance_range, centred=True)
            d = float(d_all.max())
            trans = -np.einsum("nij,nj->ni", rots, targets) + np.array([0.0, 0.0, d])
            pose_cam, cam_t = camera_pose_labels(rots, trans, pose_w, transl_w, j0)
            verts_cam = np.einsum("nij,nvj->nvi", rots, world_v) + trans[:, None]
            verts_cam = verts_cam.astype(np.float32)
            joints_cam = np.einsum("nij,nvj->nvi", rots, world_j) + trans[:, None]
            intr = _intrinsics(focal, size)
            uv, _ = _project(verts_cam, intr)
            box = np.clip([uv[..., 0].min(), uv[..., 0].max(), uv[..., 1].min(),
                           uv[..., 1].max()], 0, size)
            occ = sample_occluders(clip["rng"], clip["occluded"], box, size)
            look = {k: np.repeat(np.asarray(v)[None], num_frames, 0)
                    for k, v in clip["look"].items()}
            look["occluders"] = np.repeat(occ[None], num_frames, 0)
            rendered = _render_rows(renderer, config, verts_cam, intr, look, batch_size)
            for t in range(num_frames):
                ext = np.concatenate([rots[t], trans[t][:, None]], 1)
                yield _make_record(
                    config, rendered, t, joints_cam[t], intr[t], pose_cam[t], betas[t], cam_t[t],
                    f"synthetic_video/{split}/c{c:06d}_f{t:04d}", sequence=c, frame=t, view=0,
                    extrinsics=ext, pose_world=pose_w[t].reshape(-1), transl_world=transl_w[t])
                bar.update(1)


# ----------------------------------------------------------------------------- command line


def sample_figure(config: SyntheticConfig, split: str = "train", rows: int = 4, cols: int = 6):
    """(H, W, 3) uint8 grid of the first rows*cols records with their box and keypoints drawn."""
    from PIL import Image

    from imphmr_jax.data import draw

    tiles = []
    for rec in generate(config, split, rows * cols, progress=False):
        img = np.asarray(Image.open(io.BytesIO(rec["image"])).convert("RGB"))
        tiles.append(draw.draw_keypoints(img, rec["keypoints_2d"],
                                         box=(rec["center"], rec["scale"]),
                                         radius=max(1.0, config.image_size / 100)))
    return draw.grid(tiles, rows, cols)


def main(argv=None):
    """``python -m imphmr_jax.data.synthetic [--figure PATH] [--bench N] [--image-size S]``."""
    import argparse
    import time

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--figure", default="", help="write a 4x6 grid of train samples here (PNG)")
    ap.add_argument("--bench", type=int, default=0, help="time generating this many images")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    config = SyntheticConfig(image_size=args.image_size)
    if args.figure:
        from PIL import Image

        fig = sample_figure(config)
        Image.fromarray(fig).quantize(colors=256, dither=Image.Dither.NONE).save(args.figure,
                                                                                  optimize=True)
        print(f"wrote {args.figure} ({os.path.getsize(args.figure) / 1024:.0f} KiB)")
    if args.bench:
        t = time.perf_counter()
        for _ in generate(config, "train", args.batch_size, batch_size=args.batch_size,
                          progress=False):
            pass
        warm = time.perf_counter() - t
        t = time.perf_counter()
        n = 0
        for _ in generate(config, "bench", args.bench, batch_size=args.batch_size, progress=False):
            n += 1
        dt = time.perf_counter() - t
        print(f"image_size {args.image_size}, batch {args.batch_size}: first batch (compile) "
              f"{warm:.1f} s; {n} images in {dt:.1f} s = {n / dt:.1f} images/s "
              f"on {jax.devices()[0].platform}")


if __name__ == "__main__":
    main()
