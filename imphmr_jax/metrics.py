"""Evaluation metrics: MPJPE, PA-MPJPE, PVE (per-sample mm), ESV (docs/evaluation.md#metrics,
docs/evaluation.md#esv; ImpHMR supplementary Sec. 6.3), and the video metrics MPJAE, jitter and
acceleration error (docs/video_evaluation.md#metrics).

ESV, the Entanglement between Shape and Viewing direction: for one image, infer β_φ from every
azimuth φ = 0°, 1°, ..., 359°; σ_i is the (population, 1/360) standard deviation of coefficient i
over φ; ESV = (1/10) Σ_i σ_i. Lower means shape and viewing direction are better disentangled.
"""
from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from smpl_jax.numerics import safe_div

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
    """(num_views,) azimuths in radians, 0°, 1°, ... (the paper's ESV sweep)."""
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


# ============================================================================ joint / vertex errors
# MPJPE, PA-MPJPE and PVE (docs/evaluation.md#metrics). Inputs are metres, outputs per-sample
# millimetres. None of these functions aligns a root: the evaluation protocols
# (`imphmr_jax.evaluation`) subtract the pelvis the way SPIN/PARE do before calling them.

M_TO_MM = 1000.0
# Guard for a sample whose mask selects no joint: means divide by its weight sum, 0.
_WEIGHT_EPS = 1e-12
# Guard for a degenerate point set (all points equal): Procrustes' scale divides by its spread.
_VAR_EPS = 1e-12


def _joint_weights(mask, shape_bj, dtype):
    """(B, J) float weights from an optional (B, J) / (J,) bool or 0/1 mask."""
    if mask is None:
        return jnp.ones(shape_bj, dtype)
    w = jnp.asarray(mask).astype(dtype)
    return jnp.broadcast_to(w, shape_bj)


def _check_points(pred, gt, name):
    pred = jnp.asarray(pred)
    gt = jnp.asarray(gt)
    if pred.ndim != 3 or pred.shape[-1] != 3 or pred.shape != gt.shape:
        raise ValueError(f"{name}: pred and gt must both be (B, J, 3), got {pred.shape} and "
                         f"{gt.shape}")
    dtype = jnp.promote_types(jnp.promote_types(pred.dtype, gt.dtype), jnp.float32)
    return pred.astype(dtype), gt.astype(dtype)


def _masked_point_mean(dist, w):
    """Per-sample mean of (B, J) distances over joints with weight > 0 (weighted)."""
    return safe_div(jnp.sum(dist * w, axis=-1), jnp.sum(w, axis=-1), _WEIGHT_EPS)


def mpjpe(pred, gt, mask=None):
    """Mean per-joint position error, per sample, in millimetres.

    Args:
      pred, gt: (B, J, 3) metres, already in the same frame (protocols root-align first).
      mask: optional (B, J) or (J,) joint weights (bool or 0/1): the mean runs over the joints with
        weight > 0 (weighted). A sample with no joint selected gets 0.
    Returns:
      (B,) mean_j ||pred_j - gt_j||_2 in mm.
    """
    pred, gt = _check_points(pred, gt, "mpjpe")
    w = _joint_weights(mask, pred.shape[:2], pred.dtype)
    dist = jnp.sqrt(jnp.sum((pred - gt) ** 2, axis=-1))
    return _masked_point_mean(dist, w) * M_TO_MM


def pve(pred_verts, gt_verts, mask=None):
    """Per-vertex error (PARE's `compute_error_verts`), per sample, in millimetres.

    No alignment and no translation: offsets between the two meshes (e.g. a root offset caused by
    different β) count. Root-aligned PVE is the protocol's business (`Protocol.pve_root_aligned`).

    Args:
      pred_verts, gt_verts: (B, V, 3) metres. mask: optional (B, V) / (V,) vertex weights.
    Returns:
      (B,) mean_v ||pred_v - gt_v||_2 in mm.
    """
    pred_verts, gt_verts = _check_points(pred_verts, gt_verts, "pve")
    w = _joint_weights(mask, pred_verts.shape[:2], pred_verts.dtype)
    dist = jnp.sqrt(jnp.sum((pred_verts - gt_verts) ** 2, axis=-1))
    return _masked_point_mean(dist, w) * M_TO_MM


def similarity_procrustes(x, y, mask=None, return_transform=False):
    """Align x to y with the best similarity transform (SPIN's `compute_similarity_transform`).

    Finds scale s > 0 (for non-degenerate data), a proper rotation R (det +1: the reflection fix
    Z = diag(1, 1, sign det(U Vᵀ))) and a translation t minimising Σ_j w_j ||s R x_j + t - y_j||²,
    exactly as SPIN: centre both sets, K = X1 X2ᵀ (3 × 3), SVD K = U Σ Vᵀ, R = V Z Uᵀ,
    s = tr(R K) / ||X1||², t = μ_y - s R μ_x. With a mask the centroids, K and ||X1||² are the
    weighted ones (joints with weight 0 do not influence the fit; they are still transformed).

    Args:
      x: (B, J, 3) points to align (the prediction). y: (B, J, 3) target points.
      mask: optional (B, J) / (J,) weights.
      return_transform: also return (s (B,), R (B, 3, 3), t (B, 3)).
    Returns:
      (B, J, 3) aligned x = s R x + t (and the transform if asked).
    """
    x, y = _check_points(x, y, "similarity_procrustes")
    w = _joint_weights(mask, x.shape[:2], x.dtype)[..., None]  # (B, J, 1)
    wsum = jnp.sum(w, axis=1, keepdims=True)
    mu_x = safe_div(jnp.sum(w * x, axis=1, keepdims=True), wsum, _WEIGHT_EPS)
    mu_y = safe_div(jnp.sum(w * y, axis=1, keepdims=True), wsum, _WEIGHT_EPS)
    xc, yc = x - mu_x, y - mu_y
    var_x = jnp.sum(w * xc ** 2, axis=(1, 2))  # (B,)
    k = jnp.einsum("bji,bjk->bik", w * xc, yc)  # (B, 3, 3) = X1 X2ᵀ in SPIN's column layout
    u, _, vh = jnp.linalg.svd(k)
    v = jnp.swapaxes(vh, -1, -2)
    det = jnp.linalg.det(u @ vh)  # det(U Vᵀ) with SPIN's V = vhᵀ: U @ V.T = U @ vh
    z_last = jnp.where(det < 0, -1.0, 1.0).astype(x.dtype)
    z = jnp.ones(x.shape[:1] + (3,), x.dtype).at[:, 2].set(z_last)
    r = v @ (z[..., None] * jnp.swapaxes(u, -1, -2))  # V Z Uᵀ
    scale = safe_div(jnp.trace(r @ k, axis1=-2, axis2=-1), var_x, _VAR_EPS)
    t = mu_y[:, 0] - scale[:, None] * jnp.einsum("bij,bj->bi", r, mu_x[:, 0])
    aligned = scale[:, None, None] * jnp.einsum("bij,bnj->bni", r, x) + t[:, None, :]
    if return_transform:
        return aligned, (scale, r, t)
    return aligned


def pa_mpjpe(pred, gt, mask=None):
    """Procrustes-aligned MPJPE (SPIN's reconstruction error), per sample, in millimetres.

    The prediction is aligned to the ground truth with `similarity_procrustes` (fitted on the
    masked joints when a mask is given), then `mpjpe` over the same joints.

    Args:
      pred, gt: (B, J, 3) metres. mask: optional (B, J) / (J,) joint weights.
    Returns:
      (B,) mm.
    """
    pred, gt = _check_points(pred, gt, "pa_mpjpe")
    return mpjpe(similarity_procrustes(pred, gt, mask), gt, mask)


# ============================================================================ video metrics
# Primitives of the video protocols (`neuhmr_jax.evaluation`, docs/video_evaluation.md): joint
# angle errors between global rotations, jerk-based jitter, acceleration error, and applying a
# joint-fitted Procrustes transform to other points. Like the functions above they do no root
# alignment themselves.

RAD_TO_DEG = 180.0 / np.pi


def geodesic_angle(r1, r2):
    """Angle (radians, in [0, π]) of the relative rotation r1 r2ᵀ, elementwise.

    Computed as atan2(sin θ, cos θ) with sin θ = ½‖vee(M − Mᵀ)‖ and cos θ = ½(tr M − 1),
    M = r1 r2ᵀ: accurate near 0 and π, where arccos of the trace alone loses precision, and the
    same angle as the norm of cv2.Rodrigues(M) that EMDB's evaluation uses.

    Args:
      r1, r2: (..., 3, 3) rotation matrices (broadcasting).
    Returns:
      (...,) angles in radians.
    """
    r1 = jnp.asarray(r1)
    r2 = jnp.asarray(r2)
    dtype = jnp.promote_types(jnp.promote_types(r1.dtype, r2.dtype), jnp.float32)
    m = jnp.einsum("...ij,...kj->...ik", r1.astype(dtype), r2.astype(dtype))
    cos = 0.5 * (jnp.trace(m, axis1=-2, axis2=-1) - 1.0)
    vee = jnp.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], axis=-1)
    sin = 0.5 * jnp.sqrt(jnp.sum(vee ** 2, axis=-1))
    return jnp.arctan2(sin, cos)


def mpjae(pred_global_rotmats, gt_global_rotmats, joints=None):
    """Mean per-joint angle error, per sample, in degrees.

    Args:
      pred_global_rotmats, gt_global_rotmats: (B, J, 3, 3) GLOBAL joint rotations (the local SMPL
        rotations composed down the kinematic chain), in the same frame.
      joints: optional index list: evaluate only these columns (EMDB: [0, 1, 2, 4, 5, 16, 17, 18,
        19], `neuhmr_jax.evaluation.MPJAE_JOINTS`).
    Returns:
      (B,) mean over the joints of the geodesic angle between predicted and true rotation, degrees.
    """
    pred = jnp.asarray(pred_global_rotmats)
    gt = jnp.asarray(gt_global_rotmats)
    if pred.ndim != 4 or pred.shape[-2:] != (3, 3) or pred.shape != gt.shape:
        raise ValueError(f"mpjae: pred and gt must both be (B, J, 3, 3), got {pred.shape} and "
                         f"{gt.shape}")
    if joints is not None:
        idx = np.asarray(joints)
        pred, gt = pred[:, idx], gt[:, idx]
    return jnp.mean(geodesic_angle(pred, gt), axis=-1) * RAD_TO_DEG


def _check_sequence(joints, name, min_frames):
    joints = jnp.asarray(joints)
    if joints.ndim != 3 or joints.shape[-1] != 3:
        raise ValueError(f"{name}: joints must be (T, J, 3), got {joints.shape}")
    if joints.shape[0] < min_frames:
        raise ValueError(f"{name} needs at least {min_frames} frames, got {joints.shape[0]}")
    return joints.astype(jnp.promote_types(joints.dtype, jnp.float32))


def jitter(joints, fps=30.0, ignored_joints=None):
    """Jerk magnitude per frame (the jitter of PIP and EMDB), in m/s³ for joints in metres.

    jerk_t = (x[t+3] − 3 x[t+2] + 3 x[t+1] − x[t]) · fps³ (third finite difference), and the
    value of frame t is mean_j ‖jerk_t,j‖ over ALL J joints.

    ignored_joints reproduces EMDB's "zeroing": EMDB sets the positions of those joints to 0 in
    every frame before the difference, so their jerk is exactly 0 while they still count in the
    mean's denominator (the mean is over all J joints, not over the remaining ones). Nothing else
    is done to them.

    Units: this function returns m/s³ (input metres, fps frames per second). EMDB's tables print
    the sequence mean divided by 10 and label it "10 m/s³" (per-sequence printouts say "km/s³");
    `neuhmr_jax.evaluation` reports that EMDB unit, i.e. this value / 10.

    Args:
      joints: (T, J, 3) one sequence of joints, T >= 4 (consecutive frames).
      fps: frame rate of the sequence.
      ignored_joints: optional index list of joints whose jerk is set to 0 (kept in the mean).
    Returns:
      (T − 3,) mean jerk norm of frames 0 .. T − 4 (each uses frames t .. t + 3).
    """
    x = _check_sequence(joints, "jitter", 4)
    jerk = (x[3:] - 3.0 * x[2:-1] + 3.0 * x[1:-2] - x[:-3]) * (float(fps) ** 3)
    norm = jnp.sqrt(jnp.sum(jerk ** 2, axis=-1))  # (T - 3, J)
    if ignored_joints is not None and len(ignored_joints):
        norm = norm.at[:, np.asarray(ignored_joints)].set(0.0)
    return jnp.mean(norm, axis=-1)


def accel_error(pred, gt, valid=None):
    """Acceleration error (HMMR / VIBE), per frame window, in millimetres per frame².

    a_t = x[t] − 2 x[t+1] + x[t+2] (second difference, NOT divided by the frame time), and the
    value of window t is mean_j ‖a_t(pred)_j − a_t(gt)_j‖ · 1000.

    Args:
      pred, gt: (T, J, 3) metres, already root-aligned the way the protocol wants, T >= 3.
      valid: optional (T,) bool: a window counts only if all three of its frames are valid
        (VIBE's `compute_error_accel` with `vis`).
    Returns:
      (W,) errors of the counted windows, in order (W = T − 2 without `valid`).
    """
    pred = _check_sequence(pred, "accel_error", 3)
    gt = _check_sequence(gt, "accel_error", 3)
    if pred.shape != gt.shape:
        raise ValueError(f"accel_error: pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    acc_p = pred[:-2] - 2.0 * pred[1:-1] + pred[2:]
    acc_g = gt[:-2] - 2.0 * gt[1:-1] + gt[2:]
    err = jnp.mean(jnp.sqrt(jnp.sum((acc_p - acc_g) ** 2, axis=-1)), axis=-1) * M_TO_MM
    if valid is None:
        return err
    v = np.asarray(valid, bool).reshape(-1)
    if v.shape[0] != pred.shape[0]:
        raise ValueError(f"accel_error: valid has {v.shape[0]} entries for {pred.shape[0]} "
                         "frames")
    keep = v[:-2] & v[1:-1] & v[2:]
    return err[np.flatnonzero(keep)]


def pa_transform_points(pred_joints, gt_joints, points, mask=None):
    """Apply the similarity fitted on joints to other points (e.g. the predicted vertices).

    The transform (s, R, t) is `similarity_procrustes(pred_joints, gt_joints, mask)`'s; the
    result is s R p + t for every p in `points` (EMDB's PA-PVE: Procrustes fitted on the 24
    joints, applied to the 6890 vertices).

    Args:
      pred_joints, gt_joints: (B, J, 3). points: (B, P, 3) in the prediction's frame.
      mask: optional (B, J) / (J,) joint weights for the fit.
    Returns:
      (B, P, 3) transformed points (and nothing else; use `similarity_procrustes(...,
      return_transform=True)` for the transform itself).
    """
    _, (scale, rot, trans) = similarity_procrustes(pred_joints, gt_joints, mask,
                                                   return_transform=True)
    points = jnp.asarray(points)
    if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] != scale.shape[0]:
        raise ValueError(f"pa_transform_points: points must be (B, P, 3) with B = "
                         f"{scale.shape[0]}, got {points.shape}")
    points = points.astype(rot.dtype)
    return scale[:, None, None] * jnp.einsum("bij,bnj->bni", rot, points) + trans[:, None, :]
