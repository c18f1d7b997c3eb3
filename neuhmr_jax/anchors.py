"""NeuHMR's anchor frames: the N = ⌊T/10⌋ candidates, farthest point sampling (FPS) down to N̂,
and the n = 2 reference anchors each frame is rendered from.

The GHN renders frame t from n reference images; NeuHMR takes them from a few anchor frames spread
over the video's poses. Selection runs once, in numpy, on the HMR initialisation θ⁰:

  1. candidates: N = ⌊T/every⌋ (at least 1) uniformly spaced frames (`candidate_anchors`);
  2. anchors: FPS over the candidates' pose descriptors to N̂ frames (`select_anchors`);
  3. references per frame: the nearest anchor in descriptor space, then the anchor that best
     complements it in body-facing direction (`reference_anchors`).

Pose descriptor: the 6D (SPIN layout, `smpl_jax.rotations.matrix_to_rot6d`) root orientation in
the camera frame concatenated with the 6D of the 23 body joints, (T, 24·6). Facing vector: the
root rotation applied to the body's forward axis [0, 0, 1] (SMPL's rest body faces +z), in the
camera frame (x right, y down, z forward), as MonoHuman's `select_keyframe.py` does with Rh.

Ties are broken by the lowest index everywhere, so every selection is deterministic. N = T/10 and
FPS are the paper's (supplementary material); the spacing, the descriptor, N̂ = 8 and the
reference rule are project choices.
"""
from typing import Optional

import jax.numpy as jnp
import numpy as np

from imphmr_jax.cli import InputError
from smpl_jax.rotations import axis_angle_to_matrix, matrix_to_rot6d


def candidate_anchors(num_frames: int, every: int = 10) -> np.ndarray:
    """The N = max(⌊T/every⌋, 1) candidate anchor frames, uniformly spaced and centred.

    Frame i of N is ⌊(i + ½)·T/N⌋: the video is cut into N equal segments and each candidate sits
    at its segment's middle (T = 100: 5, 15, ..., 95), so the first and last frames (often a
    detector's worst) are not forced in.

    Args:
      num_frames: T >= 1, the video length.
      every: frames per candidate (the paper's 10).
    Returns:
      (N,) int64 frame indices, strictly increasing, in [0, T).
    Raises:
      InputError: T < 1 or every < 1.
    """
    if int(num_frames) < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if int(every) < 1:
        raise InputError(f"anchor spacing `every` must be >= 1, got {every}")
    T = int(num_frames)
    N = max(T // int(every), 1)
    return np.floor((np.arange(N) + 0.5) * T / N).astype(np.int64)


def _check_poses(poses) -> None:
    if poses.ndim != 3 or poses.shape[1:] != (24, 3) or poses.shape[0] < 1:
        raise InputError(f"poses must be (T, 24, 3) axis-angle with T >= 1, got {poses.shape}")


def pose_descriptor(poses) -> jnp.ndarray:
    """Per-frame pose descriptor: 6D root orientation (camera frame) ‖ 6D of the 23 body joints.

    Jittable (jnp); the selection functions below convert it to numpy.

    Args:
      poses: (T, 24, 3) axis-angle θ⁰, radians; joint 0 is the root orientation in the camera
        frame, joints 1..23 are relative to their parents.
    Returns:
      (T, 144) = [rot6d(R_root) (6) | rot6d(R_1) ... rot6d(R_23) (138)], SPIN 6D layout.
    Raises:
      InputError: poses is not (T, 24, 3).
    """
    poses = jnp.asarray(poses)
    _check_poses(poses)
    return matrix_to_rot6d(axis_angle_to_matrix(poses)).reshape(poses.shape[0], -1)


def farthest_point_sampling(descriptors, k: int, start: Optional[int] = None) -> np.ndarray:
    """Greedy farthest point sampling (Euclidean) of min(k, N) of N points.

    Each pick is the point whose distance to the nearest already picked point is largest. The
    first pick is `start`, by default the point farthest from the mean of all points (the most
    atypical pose), which makes the result independent of the input order up to ties.

    Args:
      descriptors: (N, D) points (numpy or jax).
      k: number of points wanted, >= 1; k >= N returns all N (in pick order).
      start: optional index of the first pick.
    Returns:
      (min(k, N),) int64 indices into descriptors, in pick order, distinct.
    Raises:
      InputError: descriptors not (N, D) with N >= 1, k < 1, or start out of range.
    """
    x = np.asarray(descriptors, np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise InputError(f"descriptors must be (N, D) with N >= 1, got {x.shape}")
    if int(k) < 1:
        raise InputError(f"number of points to sample must be >= 1, got {k}")
    n = x.shape[0]
    if start is None:
        start = int(np.argmax(np.linalg.norm(x - x.mean(0), axis=1)))
    elif not 0 <= int(start) < n:
        raise InputError(f"FPS start index {start} is out of range for {n} points")
    picks = [int(start)]
    nearest = np.linalg.norm(x - x[picks[0]], axis=1)  # distance to the nearest pick
    for _ in range(min(int(k), n) - 1):
        nearest[picks] = -1.0  # picked points never win again, even when duplicated
        picks.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.linalg.norm(x - x[picks[-1]], axis=1))
    return np.asarray(picks, np.int64)


def select_anchors(poses, num_anchors: int = 8, every: int = 10) -> np.ndarray:
    """The N̂ anchor frames: FPS over the descriptors of the N candidate frames.

    Args:
      poses: (T, 24, 3) axis-angle θ⁰ of the whole video (camera-frame root).
      num_anchors: N̂ (default 8, a project choice); fewer are returned when there are fewer
        candidates.
      every: candidate spacing (`candidate_anchors`).
    Returns:
      (min(N̂, N),) int64 anchor frame indices, sorted increasing.
    Raises:
      InputError: bad poses shape, num_anchors < 1 or every < 1.
    """
    poses = np.asarray(poses)
    _check_poses(poses)
    if int(num_anchors) < 1:
        raise InputError(f"num_anchors must be >= 1, got {num_anchors}")
    candidates = candidate_anchors(poses.shape[0], every)
    picks = farthest_point_sampling(pose_descriptor(poses[candidates]), num_anchors)
    return np.sort(candidates[picks])


def reference_anchors(poses, anchors, n: int = 2, facing_angle_deg: float = 30.0) -> np.ndarray:
    """The n reference anchors of every frame (MonoHuman-style front/back complement).

    For frame t:
      (a) the anchor nearest to t in descriptor space (`pose_descriptor`);
      (b) (n = 2) the anchor that best complements (a) in facing direction: among the anchors
          whose facing is within `facing_angle_deg` of the opposite of (a)'s facing (the "back"
          view of (a)), the one nearest to t in descriptor space; if there is none, the anchor
          whose facing differs most from (a)'s (smallest cosine).
    A frame never references itself while another anchor exists (its own image would let the GHN
    copy pixels at any pose, leaving the photometric loss no signal); (b) is never (a) while
    another eligible anchor exists. With too few eligible anchors the last pick is repeated
    (e.g. one anchor: both references are it; two anchors and t one of them: both are the other).

    Args:
      poses: (T, 24, 3) axis-angle θ⁰ (camera-frame root).
      anchors: (A,) distinct anchor frame indices in [0, T) (e.g. `select_anchors`).
      n: references per frame, 1 or 2 (the GHN's n = 2).
      facing_angle_deg: tolerance of the "opposite facing" test, degrees (MonoHuman's 30°).
    Returns:
      (T, n) int64 anchor frame indices; column 0 is (a), column 1 is (b).
    Raises:
      InputError: bad poses shape, empty / repeated / out-of-range anchors, or n not 1 or 2.
    """
    poses = np.asarray(poses)
    _check_poses(poses)
    T = poses.shape[0]
    anchors = np.asarray(anchors, np.int64).reshape(-1)
    if anchors.size == 0 or np.unique(anchors).size != anchors.size:
        raise InputError(f"anchors must be non-empty and distinct, got {anchors.tolist()}")
    if anchors.min() < 0 or anchors.max() >= T:
        raise InputError(f"anchors {anchors.tolist()} fall outside the video's frames [0, {T})")
    if n not in (1, 2):
        raise InputError(f"number of reference anchors n must be 1 or 2, got {n}")

    desc = np.asarray(pose_descriptor(poses), np.float64)
    dist = np.linalg.norm(desc[:, None, :] - desc[anchors][None, :, :], axis=-1)  # (T, A)
    is_self = np.arange(T)[:, None] == anchors[None, :]
    if anchors.size > 1:
        dist = np.where(is_self, np.inf, dist)
    a = np.argmin(dist, axis=1)  # (T,) index into anchors
    if n == 1:
        return anchors[a][:, None]

    facing = np.asarray(axis_angle_to_matrix(jnp.asarray(poses[anchors, 0])), np.float64)[:, :, 2]
    cos_to_a = (facing @ facing.T)[a]  # (T, A): cosine between (a)'s facing and each anchor's
    eligible = ~is_self & (np.arange(anchors.size)[None, :] != a[:, None])
    back = eligible & (cos_to_a <= -np.cos(np.deg2rad(facing_angle_deg)))
    b = np.where(back.any(1), np.argmin(np.where(back, dist, np.inf), axis=1),
                 np.argmin(np.where(eligible, cos_to_a, np.inf), axis=1))
    b = np.where(eligible.any(1), b, a)
    return np.stack([anchors[a], anchors[b]], axis=1)
