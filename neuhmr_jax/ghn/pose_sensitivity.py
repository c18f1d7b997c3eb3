"""Is the GHN's render-and-compare loss lowest at the true pose? The property NeuHMR relies on,
measured on held-out frames (docs/neuhmr.md#pose-sensitivity).

For a target (person, frame, camera) with its n references, the *GHN loss* of a pose θ is

    L(θ) = MSE(C(θ), image) + λ_W · BCE(W(θ), mask)

over the pixels of the target's mask box (grown by a margin), rendered deterministically. Two
studies:

  * `perturbation_study`: rotate one major joint (hips, knees, spine, shoulders, elbows, root) by
    ±angle about each of its three local axes and count how often L(perturbed) > L(true pose);
  * `recovery_study`: start from the true pose with one such joint rotated by `angle` about a
    random axis, take `steps` Adam steps on the whole pose (24×3 axis-angle) minimising L, and
    report the mean 24-joint position error (mm) before and after.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from neuhmr_jax.ghn import data as ghn_data
from neuhmr_jax.ghn.model import Camera, References

# SMPL joints: root, hips, knees, spine (spine1..3), shoulders, elbows.
MAJOR_JOINTS = {"root": 0, "left_hip": 1, "right_hip": 2, "spine1": 3, "left_knee": 4,
                "right_knee": 5, "spine2": 6, "spine3": 9, "left_shoulder": 16,
                "right_shoulder": 17, "left_elbow": 18, "right_elbow": 19}


def box_pixels(mask: np.ndarray, margin: int = 4, stride: int = 1) -> np.ndarray:
    """Pixel centres (P, 2) of the mask's bounding box grown by `margin` (every `stride`-th)."""
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    r0, r1 = max(rows.min() - margin, 0), min(rows.max() + margin, h - 1)
    c0, c1 = max(cols.min() - margin, 0), min(cols.max() + margin, w - 1)
    rr, cc = np.meshgrid(np.arange(r0, r1 + 1, stride), np.arange(c0, c1 + 1, stride),
                         indexing="ij")
    return np.stack([cc.ravel(), rr.ravel()], -1).astype(np.float32) + 0.5


def make_loss(ghn, variables, x, pixels, occupancy_weight: float = 0.1):
    """L(pose, transl) for one assembled target `x` (ghn.data.assemble, unbatched)."""
    image_size = x["image"].shape[:2]
    refs = References(jnp.asarray(x["ref_image"]),
                      Camera(jnp.asarray(x["ref_K"]), jnp.asarray(x["ref_R"]),
                             jnp.asarray(x["ref_t"])),
                      jnp.asarray(x["ref_pose"]), jnp.asarray(x["ref_transl"]))
    refs = refs._replace(features=ghn.encode(variables, refs.images))
    weights = ghn.skinning_weights(variables)
    cam = Camera(jnp.asarray(x["K"]), jnp.asarray(x["R"]), jnp.asarray(x["t"]))
    pixels = jnp.asarray(pixels)
    target = ghn_data.gather_pixels(jnp.asarray(x["image"]), pixels)
    mask = ghn_data.gather_pixels(jnp.asarray(x["mask"])[..., None], pixels)[:, 0]
    betas = jnp.asarray(x["betas"])

    def loss(pose, transl):
        out = ghn.render(variables, cam, pose, betas, refs, pixels, transl=transl,
                         weights=weights, image_size=image_size)
        w = jnp.clip(out.occupancy, 1e-5, 1 - 1e-5)
        bce = -jnp.mean(mask * jnp.log(w) + (1 - mask) * jnp.log1p(-w))
        return jnp.mean((out.rgb - target) ** 2) + occupancy_weight * bce

    return loss


def rotate_joint(pose: np.ndarray, joint: int, axis: np.ndarray, angle: float) -> np.ndarray:
    """pose (24, 3) axis-angle with joint's local rotation R_j replaced by R_j · R(axis, angle)."""
    from scipy.spatial.transform import Rotation
    out = np.array(pose, np.float64)
    r = Rotation.from_rotvec(out[joint]) * Rotation.from_rotvec(np.asarray(axis) * angle)
    out[joint] = r.as_rotvec()
    return out.astype(np.float32)


def joints_of(body, pose, betas, transl) -> np.ndarray:
    import smpl_jax
    out = smpl_jax.forward(body, jnp.asarray(pose)[None], jnp.asarray(betas)[None],
                           jnp.asarray(transl)[None], return_vertices=False)
    return np.asarray(out.joints[0, :24])


def _targets(people, config, num_targets: int, seed: int):
    rng = np.random.default_rng(seed)
    return ghn_data.sample_triplets(rng, people, num_targets, n_refs=config.data.n_refs,
                                    same_camera=config.data.same_camera)


def perturbation_study(ghn, variables, people, config, *, num_targets: int = 8,
                       angle_deg: float = 15.0, joints: Optional[Sequence[str]] = None,
                       seed: int = 0, pixel_stride: int = 1, progress: bool = False) -> dict:
    """Fraction of (target, joint, axis, sign) perturbations with a higher GHN loss than the true
    pose; returns dict(fraction_higher, count, per_joint {name: fraction}, rows)."""
    names = list(joints or MAJOR_JOINTS)
    triplets = _targets(people, config, num_targets, seed)
    rows = []
    bar = _bar(progress, len(triplets), "perturbations")
    for tri in triplets:
        x = jax.tree.map(lambda a: a[0], ghn_data.assemble(people, tri[None],
                                                           config.ghn.background))
        pixels = box_pixels(x["mask"] > 0.5, stride=pixel_stride)
        loss = jax.jit(make_loss(ghn, variables, x, pixels, config.loss.occupancy_bce))
        pose0, transl = np.asarray(x["pose"]), jnp.asarray(x["transl"])
        base = float(loss(jnp.asarray(pose0), transl))
        for name in names:
            for ax in np.eye(3):
                for sign in (1.0, -1.0):
                    p = rotate_joint(pose0, MAJOR_JOINTS[name], ax, sign * np.radians(angle_deg))
                    val = float(loss(jnp.asarray(p), transl))
                    rows.append({"target": int(tri[0]), "joint": name, "axis": int(ax.argmax()),
                                 "sign": sign, "loss": val, "loss_true": base,
                                 "higher": bool(val > base)})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    per_joint = {n: float(np.mean([r["higher"] for r in rows if r["joint"] == n])) for n in names}
    return {"fraction_higher": float(np.mean([r["higher"] for r in rows])), "count": len(rows),
            "per_joint": per_joint, "rows": rows}


def recovery_study(ghn, variables, people, config, *, num_targets: int = 8,
                   angle_deg: float = 15.0, steps: int = 50, learning_rate: float = 0.01,
                   joints: Optional[Sequence[str]] = None, seed: int = 0,
                   pixel_stride: int = 1, prior_weight: float = 0.0,
                   free: str = "all", progress: bool = False) -> dict:
    """Adam on the pose from a one-joint `angle_deg` perturbation (random major joint and axis per
    target); returns dict(error_before_mm, error_after_mm, reduction (mean of per-target
    relative reductions), rows).

    prior_weight λ adds λ Σ_j ‖θ_j − θ_j^start‖² (radians²) to the loss, NeuHMR's pull towards
    the estimator's pose: without it Adam's normalised steps let joints the rendering barely
    constrains (hands, twists about a limb's axis) wander by ~learning_rate per step.
    free: 'all' optimises the whole pose (NeuHMR's setting); 'perturbed' only the perturbed
    joint's rotation (the others stay at the truth), which isolates whether the loss's gradient
    points back to the truth from whether the rest of the pose is determined by the image.
    """
    if free not in ("all", "perturbed"):
        raise ValueError(f"free must be 'all' or 'perturbed', got {free!r}")
    names = list(joints or MAJOR_JOINTS)
    rng = np.random.default_rng(seed + 1)
    triplets = _targets(people, config, num_targets, seed)
    tx = optax.adam(learning_rate)
    rows = []
    bar = _bar(progress, len(triplets), "recovery")
    for tri in triplets:
        x = jax.tree.map(lambda a: a[0], ghn_data.assemble(people, tri[None],
                                                           config.ghn.background))
        pixels = box_pixels(x["mask"] > 0.5, stride=pixel_stride)
        loss = make_loss(ghn, variables, x, pixels, config.loss.occupancy_bce)
        transl = jnp.asarray(x["transl"])
        name = names[rng.integers(len(names))]
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        pose0 = np.asarray(x["pose"])
        start = rotate_joint(pose0, MAJOR_JOINTS[name], axis, np.radians(angle_deg))

        start_j = jnp.asarray(start)
        free_mask = np.ones((pose0.shape[0], 1), np.float32)
        if free == "perturbed":
            free_mask = (np.arange(pose0.shape[0]) == MAJOR_JOINTS[name])[:, None].astype(
                np.float32)
        objective = lambda p: loss(p, transl) + prior_weight * jnp.sum((p - start_j) ** 2)

        @jax.jit
        def run(pose):
            def body(carry, _):
                p, opt = carry
                g = jax.grad(objective)(p) * free_mask
                upd, opt = tx.update(g, opt, p)
                return (optax.apply_updates(p, upd), opt), None
            (p, _), _ = jax.lax.scan(body, (pose, tx.init(pose)), None, length=steps)
            return p

        final = np.asarray(run(jnp.asarray(start)))
        gt = joints_of(ghn.body, pose0, x["betas"], x["transl"])
        err = lambda p: 1000 * float(np.mean(np.linalg.norm(
            joints_of(ghn.body, p, x["betas"], x["transl"]) - gt, axis=-1)))
        before, after = err(start), err(final)
        rows.append({"target": int(tri[0]), "joint": name, "error_before_mm": before,
                     "error_after_mm": after, "reduction": 1.0 - after / max(before, 1e-9)})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {"error_before_mm": float(np.mean([r["error_before_mm"] for r in rows])),
            "error_after_mm": float(np.mean([r["error_after_mm"] for r in rows])),
            "reduction": float(np.mean([r["reduction"] for r in rows])), "rows": rows}


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from imphmr_jax.training.writer import progress_bar
    return progress_bar(total, desc=desc)
