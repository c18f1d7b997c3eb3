"""Keypoint fitting: the per-frame optimisation baseline NeuHMR is compared with — SMPL fitted to
2D keypoints from an off-the-shelf detector (the paper uses ViTPose) instead of to a rendering
(docs/neuhmr_inputs.md#keypoint-fitting-baseline).

    refined = fit_keypoints(body, init, keypoints, confidence, K)   # an Init, same frames

Per frame t, over the pose θ_t (all 24 joints, root included) and, by default, the translation
T_t, with β_t fixed, starting from (and regularised towards) the initialisation (θ⁰_t, T⁰_t):

    L_t = w_kp   Σ_j c_tj Σ_{d ∈ x,y} ρ((π(J_j(θ_t, β_t, T_t)) − k_tj)_d / D_t)
        + w_pose ‖θ_t − θ⁰_t‖²
        + w_bend Σ_{knees, elbows} max(0, −σ_j θ_t,j,a_j)²
        + w_transl ‖T_t − T⁰_t‖²

* J_j: the 24 SMPL skeleton joints (`smpl_jax.forward`); π the pinhole projection with K
  (`joint_matching.project`); k_tj, c_tj: the keypoints (pixels) and their confidences (0 for a
  joint the detector does not give: map the detector's joints to SMPL's 24 before calling).
* ρ: Geman–McClure (`joint_matching.geman_mcclure`, scale `gm_scale` = 0.05 by default) on
  each coordinate of the residual, as SMPLify does: quadratic for residuals well below
  0.05·D_t (a limb's error of some 20 degrees), flat beyond a few times that, so one wrong
  keypoint costs at most w_kp·c·2·gm_scale² and barely pulls.
* D_t: the diagonal of the box around the initialisation's projected joints (pixels), so the
  weights do not depend on the image size or the person's distance (the keypoints' own box would
  be inflated by an outlier).
* Bend prior (a project choice): knees and elbows bend one way. In SMPL's rest frame a knee
  flexes by a positive rotation about x and the left / right elbow by a negative / positive
  rotation about y (SMPLify's angle prior uses the same axes and signs, with an exponential);
  the axis-angle component about that bend axis taken with the wrong sign (hyper-extension) is
  penalised quadratically, natural bending is free.
* Translation prior: keeps the depth, which 2D keypoints barely constrain, near the initial one.

Optimisation: optax Adam for `steps` steps with the learning rate decaying from `lr` to 1% of it
on a cosine (Adam's steps stay about lr long near the optimum otherwise), the steps a
`jax.lax.scan` inside one jitted function. Frames are independent (Adam's moments are per
parameter and L is a sum of per-frame terms), so they are processed in batches of
`batch_frames` (the last one padded to the same size, so one program serves every batch) and the
result does not depend on the batching. Deterministic: nothing is random.
"""
from __future__ import annotations

from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

import smpl_jax
from imphmr_jax.cli import InputError
from neuhmr_jax.data.common import NUM_SMPL_JOINTS, padded_size
from neuhmr_jax.data.inits import Init
from neuhmr_jax.joint_matching import geman_mcclure, project

DEFAULT_WEIGHTS = {"keypoints": 1.0, "pose": 1e-3, "bend": 0.1, "transl": 1e-2}
DEFAULT_GM_SCALE = 0.05  # ρ's scale, in units of the person's box diagonal D_t

# Knees and elbows: (joint, axis of bending in SMPL's rest frame, sign of natural flexion).
BEND_JOINTS = np.array([4, 5, 18, 19])  # left knee, right knee, left elbow, right elbow
BEND_AXES = np.array([0, 0, 1, 1])  # x, x, y, y
BEND_SIGNS = np.array([1.0, 1.0, -1.0, 1.0])


def bend_penalty(poses) -> jax.Array:
    """Σ over knees and elbows of max(0, −σ_j θ_j,a_j)²: hyper-extension, (...) from
    (..., 24, 3) axis-angle poses (zero for natural bending)."""
    poses = jnp.asarray(poses)
    angles = poses[..., BEND_JOINTS, BEND_AXES] * jnp.asarray(BEND_SIGNS, poses.dtype)
    return jnp.sum(jnp.square(jnp.minimum(angles, 0.0)), axis=-1)


def _project_joints(body, poses, betas, transl, K):
    joints = smpl_jax.forward(body, poses, betas, transl, return_vertices=False).joints
    return project(joints[..., :NUM_SMPL_JOINTS, :], K)[0]


def _frame_terms(body, params, fixed, targets, K, gm_scale):
    """The four loss terms per frame, each (B,)."""
    transl = params["transl"] if "transl" in params else fixed["transl0"]
    px = _project_joints(body, params["pose"], fixed["betas"], transl, K)
    r = (px - targets["keypoints"]) / targets["diag"][:, None, None]
    kp = jnp.sum(targets["confidence"][..., None] * geman_mcclure(r, gm_scale), axis=(1, 2))
    pose = jnp.sum(jnp.square(params["pose"] - fixed["pose0"]), axis=(1, 2))
    trans = jnp.sum(jnp.square(transl - fixed["transl0"]), axis=1)
    return {"keypoints": kp, "pose": pose, "bend": bend_penalty(params["pose"]), "transl": trans}


def _fit_batch_impl(body, pose0, betas, transl0, keypoints, confidence, diag, mask, K, weights,
                    gm_scale, lr, *, steps: int, fit_transl: bool):
    fixed = {"pose0": pose0, "betas": betas, "transl0": transl0}
    targets = {"keypoints": keypoints, "confidence": confidence, "diag": diag}
    params = {"pose": pose0, "transl": transl0} if fit_transl else {"pose": pose0}
    # Cosine decay to 1% of lr: Adam's steps stay ~lr near the optimum without it.
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.01))

    def total(p):
        terms = _frame_terms(body, p, fixed, targets, K, gm_scale)
        per_frame = sum(weights[k] * terms[k] for k in terms)
        return jnp.sum(mask * per_frame)

    def step(carry, _):
        p, state = carry
        loss, grads = jax.value_and_grad(total)(p)
        updates, state = opt.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params["pose"], params.get("transl", transl0), losses


_fit_batch = jax.jit(_fit_batch_impl, static_argnames=("steps", "fit_transl"))


def _checked_inputs(init: Init, keypoints, confidence, K):
    from neuhmr_jax.data.video import parse_intrinsics

    n = init.num_frames
    kp = np.asarray(keypoints, np.float64)
    if kp.shape != (n, NUM_SMPL_JOINTS, 2):
        raise InputError(f"keypoints must have shape ({n}, 24, 2) (the SMPL joints' pixels, one "
                         f"row per frame of {init.source}), got {kp.shape}")
    conf = np.ones(kp.shape[:2]) if confidence is None else np.asarray(confidence, np.float64)
    if conf.shape != (n, NUM_SMPL_JOINTS):
        raise InputError(f"confidence must have shape ({n}, 24), got {conf.shape}")
    if not np.all(np.isfinite(conf)) or np.any(conf < 0):
        t, j = np.argwhere(~(np.isfinite(conf) & (conf >= 0)))[0]
        raise InputError(f"confidence must be finite and >= 0; frame {t} joint {j} is "
                         f"{conf[t, j]}")
    used = conf > 0
    bad = used & ~np.all(np.isfinite(kp), axis=-1)
    if bad.any():
        t, j = np.argwhere(bad)[0]
        raise InputError(f"keypoint of frame {t} joint {j} is not finite but has confidence "
                         f"{conf[t, j]:g} (give confidence 0 for missing joints)")
    kp = np.where(used[..., None], kp, 0.0)
    return kp, conf, parse_intrinsics(K)


def _initial_diagonals(body, init: Init, K, chunk: int) -> np.ndarray:
    """D_t: the diagonal (pixels, >= 1) of the box around the init's projected joints."""
    out = []
    for start in range(0, init.num_frames, chunk):
        sl = slice(start, start + chunk)
        px = np.asarray(_project_jit(body, init.poses[sl], init.betas[sl], init.transl[sl], K))
        size = px.max(axis=1) - px.min(axis=1)
        out.append(np.maximum(np.hypot(size[:, 0], size[:, 1]), 1.0))
    return np.concatenate(out)


_project_jit = jax.jit(_project_joints)


def reprojection_error(body, init: Init, keypoints, confidence, K, *,
                       chunk: int = 64) -> np.ndarray:
    """(T,) confidence-weighted mean pixel distance between the projected SMPL joints of `init`
    and the keypoints (NaN for a frame without a confident keypoint)."""
    kp, conf, K = _checked_inputs(init, keypoints, confidence, K)
    errs = []
    for start in range(0, init.num_frames, chunk):
        sl = slice(start, start + chunk)
        px = np.asarray(_project_jit(body, init.poses[sl], init.betas[sl], init.transl[sl], K),
                        np.float64)
        d = np.linalg.norm(px - kp[sl], axis=-1)
        w = conf[sl]
        with np.errstate(invalid="ignore", divide="ignore"):
            errs.append(np.sum(w * d, axis=1) / np.sum(w, axis=1))
    return np.concatenate(errs)


def fit_keypoints(body, init: Init, keypoints, confidence, K, *, steps: int = 100,
                  lr: float = 0.01, batch_frames: int = 64, fit_transl: bool = True,
                  weights: Optional[Mapping[str, float]] = None,
                  gm_scale: float = DEFAULT_GM_SCALE, progress: bool = True) -> Init:
    """Fit each frame's SMPL pose (and translation) to 2D keypoints (the module docstring's L).

    Args:
      body: the SMPL body (`smpl_jax.load`).
      init: the per-frame initialisation (`neuhmr_jax.data.inits.Init`), T frames; its betas are
        kept.
      keypoints: (T, 24, 2) pixels of the 24 SMPL joints (x right, y down, image spanning
        [0, W] × [0, H]); entries with confidence 0 are ignored (may be NaN).
      confidence: (T, 24) >= 0 per-joint weights (detector scores), or None for all ones.
      K: the camera, (3, 3) or anything `video.parse_intrinsics` reads.
      steps: Adam steps per batch. lr: Adam's learning rate (radians / metres per step).
      batch_frames: frames optimised together (memory; the result does not depend on it).
      fit_transl: also optimise the translation (else it stays the init's).
      weights: overrides of DEFAULT_WEIGHTS ('keypoints', 'pose', 'bend', 'transl').
      gm_scale: Geman–McClure scale in units of the box diagonal D_t.
      progress: a progress bar over the batches.
    Returns:
      An Init with the fitted poses (and translations), the init's betas, and source
      '<init source> + keypoint fit'.
    """
    from imphmr_jax.training.writer import progress_bar

    unknown = sorted(set(weights or {}) - set(DEFAULT_WEIGHTS))
    if unknown:
        raise ValueError(f"fit_keypoints: unknown weights {unknown}; the terms are "
                         f"{sorted(DEFAULT_WEIGHTS)}")
    if steps < 1 or batch_frames < 1:
        raise ValueError(f"fit_keypoints: steps and batch_frames must be >= 1, got {steps}, "
                         f"{batch_frames}")
    w = {k: jnp.float32(v) for k, v in {**DEFAULT_WEIGHTS, **(weights or {})}.items()}
    kp, conf, K = _checked_inputs(init, keypoints, confidence, K)
    n = init.num_frames
    size = padded_size(n, batch_frames)
    diag = _initial_diagonals(body, init, K, size)
    K = jnp.asarray(K, jnp.float32)
    poses, transl = [], []
    n_batches = -(-n // size)
    bar = progress_bar(n_batches, enabled=progress, desc="keypoint fit")
    try:
        for start in range(0, n, size):
            idx = np.arange(start, start + size)
            real = idx < n
            idx = np.minimum(idx, n - 1)  # pad with copies of the last frame, masked out
            p, t, _ = _fit_batch(
                body, jnp.asarray(init.poses[idx]), jnp.asarray(init.betas[idx]),
                jnp.asarray(init.transl[idx]), jnp.asarray(kp[idx], jnp.float32),
                jnp.asarray(conf[idx], jnp.float32), jnp.asarray(diag[idx], jnp.float32),
                jnp.asarray(real, jnp.float32), K, w, jnp.float32(gm_scale), jnp.float32(lr),
                steps=int(steps), fit_transl=bool(fit_transl))
            m = int(real.sum())
            poses.append(np.asarray(p)[:m])
            transl.append(np.asarray(t)[:m])
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return Init(np.concatenate(poses), init.betas, np.concatenate(transl),
                source=f"{init.source} + keypoint fit")

