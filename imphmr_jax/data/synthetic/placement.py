"""Cameras and placing people: look-at cameras, camera-frame SMPL labels from a world pose, and
the root depth and image position that give a person a wanted size and place in the frame.

Host-side float64 numpy. Projection and intrinsics are :mod:`imphmr_jax.geometry.camera`'s:
``camera.project`` is plain arithmetic, so float64 numpy points stay float64 numpy (no float32
round trip through jax); ``camera.intrinsics`` builds the [f, f, size/2, size/2] rows.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from imphmr_jax.data.synthetic import rotations
from imphmr_jax.geometry import camera

_MIN_DEPTH = 0.3  # nearest vertex depth allowed when placing a person, metres


class Box(NamedTuple):
    """Projected pixel bounds of N point sets, each (N,)."""

    umin: np.ndarray
    umax: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray

    def at(self, k: int) -> np.ndarray:
        """(4,) [umin, umax, vmin, vmax] of set k."""
        return np.array([self.umin[k], self.umax[k], self.vmin[k], self.vmax[k]])


class Placement(NamedTuple):
    """Where :func:`place_people` put N people: root (N, 3) camera positions, metres, and the
    projected boxes of their (subsampled) vertices, pixels."""

    root: np.ndarray
    box: Box


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
      SMPL rotates about J0, not the origin, hence cam_t = R (J0 + transl_w) + t - J0.
    """
    rot = np.asarray(rot, np.float64)
    pose_cam = np.array(pose_world, np.float64, copy=True)
    pose_cam[:, 0] = rotations.rotate_orientation(rot, pose_cam[:, 0])
    j0 = np.asarray(root_rest, np.float64)
    cam_t = np.einsum("nij,nj->ni", rot, j0 + transl_world) + trans - j0
    return pose_cam.astype(np.float32), cam_t.astype(np.float32)


def intrinsics(focal, size: int) -> np.ndarray:
    """(N,) focal lengths, pixels -> (N, 4) float32 [f, f, size/2, size/2] of a square image."""
    return np.asarray(camera.intrinsics(np.asarray(focal, np.float64), size, size), np.float32)


def projected_box(points_cam, intr) -> Box:
    """Pixel bounds of (N, P, 3) camera-frame points under (N, 4) intrinsics."""
    uv, _ = camera.project(points_cam, intr)
    return Box(uv[..., 0].min(1), uv[..., 0].max(1), uv[..., 1].min(1), uv[..., 1].max(1))


def _root_at(shift, d, focal):
    """Root (N, 3) at depth d (N,) projecting ``shift`` (N, 2) pixels off the image centre."""
    return np.stack([shift[:, 0] * d / focal, shift[:, 1] * d / focal, d], -1)


def fit_depth(rel, focal, target, size, dist_range, centred: bool):
    """Root depth d (N,) giving a projected size ``target`` (pixels) with the root on the axis.

    rel: (N, V, 3) root-relative camera-frame points; focal, target: (N,) pixels.
    centred=False: ``target`` is the larger box side; True: the largest distance of any point from
    the image centre (the person stays centred, as for look-at cameras). Fixed-point iterations
    (size ~ 1/d), then clipped to ``dist_range`` and to a nearest-vertex depth >= _MIN_DEPTH.
    """
    n = rel.shape[0]
    intr = intrinsics(focal, size)
    near = _MIN_DEPTH - rel[..., 2].min(1)  # the root depth putting the nearest point at _MIN_DEPTH
    ext = np.maximum(np.ptp(rel[..., 0], 1), np.ptp(rel[..., 1], 1))
    if centred:
        ext = 2.0 * np.maximum(np.abs(rel[..., 0]).max(1), np.abs(rel[..., 1]).max(1))
        target = 2.0 * target
    d = np.maximum(focal * ext / target, near + 0.05)
    for _ in range(4):
        root = np.stack([np.zeros(n), np.zeros(n), d], -1)
        b = projected_box(rel + root[:, None, :], intr)
        c = size / 2
        s = (2.0 * np.maximum.reduce([c - b.umin, b.umax - c, c - b.vmin, b.vmax - c]) if centred
             else np.maximum(b.umax - b.umin, b.vmax - b.vmin))
        d = np.maximum(d * s / target, near + 0.05)
    d = np.clip(d, dist_range[0], dist_range[1])
    return np.maximum(d, near)


def place_people(rel, focal, fill, truncated, side, frac, place, config) -> Placement:
    """Root camera positions for root-relative camera-frame vertices rel (N, V, 3).

    focal (N,) pixels; fill (N,) the larger box side as a fraction of the image; truncated (N,)
    bool, side (N,) int, frac (N,); place (N, 2) uniforms in [0, 1). Depth from the wanted fill;
    the box is then placed uniformly inside the image with a 2% margin (centred if it cannot fit),
    or, for truncated samples, with ``frac`` of its side beyond image side ``side`` (0 left,
    1 right, 2 top, 3 bottom). Placement is refined on the exact perspective projection.
    """
    size = float(config.image_size)
    n = rel.shape[0]
    margin = 0.02 * size
    rel = rel[:, ::3]  # a third of the vertices bound the box well within the margin
    intr = intrinsics(focal, size)
    d = fit_depth(rel, focal, fill * size, size, config.distance_range, centred=False)
    truncated = np.asarray(truncated, bool)
    rows = np.arange(n)
    axis = np.where(np.asarray(side) < 2, 0, 1)  # the truncated image axis (0 u, 1 v)
    before = np.asarray(side) % 2 == 0  # pushed out through the left / top side
    shift = np.zeros((n, 2))  # image-plane shift of the root from the image centre, pixels
    for it in range(3):
        b = projected_box(rel + _root_at(shift, d, focal)[:, None, :], intr)
        box_lo, box_hi = np.stack([b.umin, b.vmin], 1), np.stack([b.umax, b.vmax], 1)
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
    root = _root_at(shift, d, focal)
    return Placement(root, projected_box(rel + root[:, None, :], intr))


def world_placement(verts_w, joints_w) -> np.ndarray:
    """World translation (N, 3) putting the root above the origin and the lowest vertex on y=0."""
    j0 = joints_w[:, 0]
    return np.stack([-j0[:, 0], -verts_w[..., 1].min(1), -j0[:, 2]], -1)
