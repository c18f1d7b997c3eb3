"""Host-side float64 rotations (scipy's ``Rotation``): the package's one place for them.

Axis-angle vectors are (..., 3) in radians; world y is up and a body's forward axis is its +z. The
labels are computed in float64 on the host and stored as float32, so these stay in numpy rather
than ``smpl_jax.rotations`` (jax, float32 unless x64 is enabled).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

_FORWARD = [0.0, 0.0, 1.0]  # the rest body faces +z


def forward_axis(global_orient) -> np.ndarray:
    """(3,) world direction of the body's forward axis under a (3,) global orientation."""
    return Rotation.from_rotvec(np.asarray(global_orient, np.float64)).apply(_FORWARD)


def set_yaw(global_orient, yaw) -> np.ndarray:
    """Turn a body-frame global orientation (axis-angle, y up) about the vertical axis so that the
    body's forward axis (+z) points at azimuth `yaw` (radians; 0 = +z, towards a camera at
    azimuth 0); a body whose forward axis is vertical (lying face up/down) keeps its yaw."""
    root = Rotation.from_rotvec(np.asarray(global_orient, np.float64))
    fwd = root.apply(_FORWARD)
    if math.hypot(fwd[0], fwd[2]) < 1e-6:
        return np.asarray(global_orient, np.float32)
    turn = yaw - math.atan2(fwd[0], fwd[2])
    return (Rotation.from_rotvec([0.0, turn, 0.0]) * root).as_rotvec().astype(np.float32)


def turn_about_vertical(global_orient, angles) -> np.ndarray:
    """(T, 3) axis-angle of a (3,) global orientation turned about world y by each of (T,) angles
    (radians)."""
    yaw = Rotation.from_euler("y", np.asarray(angles)[:, None])
    return (yaw * Rotation.from_rotvec(global_orient)).as_rotvec()


def rotate_orientation(rot, global_orient) -> np.ndarray:
    """(N, 3) axis-angle of ``rot @ R(global_orient)`` for (N, 3, 3) rotations and (N, 3)
    axis-angle (e.g. a world global orientation seen from a world -> camera rotation)."""
    return (Rotation.from_matrix(rot) * Rotation.from_rotvec(global_orient)).as_rotvec()


def slerp_poses(keys, num_frames, interval) -> np.ndarray:
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
