"""Motion mapping 𝒯 of NeuHMR's GHN: HumanNeRF's skeletal motion field (Weng et al., CVPR 2022).

Frames (metres throughout):
  * canonical space: the subject's rest pose, i.e. smpl_jax's body frame at zero pose with the
    subject's β (for the default bodies: y up, facing +z, the body's left on +x, pelvis near the
    origin). Canonical points are written x_c.
  * observation space: the frame of one posed body, as `smpl_jax.forward` returns it for the same
    pose, β and translation (root orientation and transl included). HumanNeRF's body-local
    observation space (root orientation Rh and Th moved into the camera) is the special case of a
    zero root rotation and no translation; which one to use is the caller's choice.

Per-bone motion bases (`MotionBases`, R (J, 3, 3), t (J, 3)):
  * `bone_transforms` gives the posed bone transforms G_i (canonical -> observation): linear blend
    skinning is x_obs = Σ_i w_i (R_i x_c + t_i).
  * `observation_to_canonical` gives M_i = G_i^{-1} (observation -> canonical), HumanNeRF's
    `MotionBasisComputer` output M_i = G^cnl_i (G^dst_i)^{-1}, used by both warps.

Skinning-weight volume W: (J + 1, D, H, W) (channel i < J: bone i; channel J: background) over an
axis-aligned canonical box (`canonical_box`); voxel (k, j, i) sits at (x, y, z) = lo + (i, j, k) *
(hi - lo) / (size - 1), i.e. x runs along the last axis, and sampling is trilinear with
align_corners=True and zero padding (`trilinear`, PyTorch's grid_sample convention). It is either
a fixed prior (`gaussian_bone_prior`: HumanNeRF's; `body_weight_prior`: from the body's own
skinning weights) or learned (`SkinningVolume`: W = softmax_c(Dec(e) + log P)).

𝒯 itself:
  * `backward_warp` (observation -> canonical, HumanNeRF's `_sample_motion_fields`):
        w_i(x) = W_i(M_i x),  x_c = Σ_i w_i(x) M_i x / max(Σ_i w_i(x), 1e-4),  fg(x) = Σ_i w_i(x)
    (fg multiplies the NeRF's alpha).
  * `forward_warp` (canonical -> frame k, ActorsNeRF's `tpose_points_to_pose_points`):
        b = normalise_i W_i(x_c),   x_k = (Σ_i b_i (M^k_i)^{-1}) x_c   (blended rigid transform).

Why one module: the volume's layout (channel order, [z, y, x] axes, the box, align_corners and
zero padding) is one convention that the priors and the decoder write and the samplers and warps
read; keeping writers and readers side by side keeps that convention in one place.

Batching: every function here handles ONE frame (one set of bases, one volume) and any leading
point dims; batch frames with `jax.vmap` (e.g. `jax.vmap(bone_transforms, (None, 0, 0, 0))`).
Everything except the two numpy priors is jit-able and differentiable w.r.t. pose (through
`bone_transforms`), points and volume. Float32 unless the inputs are float64.
"""
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from smpl_jax import joint_sets as _js
from smpl_jax.numerics import safe_div
from smpl_jax.rotations import axis_angle_to_matrix

__all__ = ["Box", "MotionBases", "SkinningVolume", "backward_warp", "body_weight_prior",
           "bone_transforms", "bone_weights", "canonical_box", "canonical_joints", "forward_warp",
           "gaussian_bone_prior", "normalise", "observation_box", "observation_to_canonical",
           "rest_surface_fields", "subject_sdf", "surface_occupancy", "trilinear"]

# HumanNeRF's floor on Σ_i w_i in the backward warp (a point with no bone weight maps to 0, and
# fg = 0 removes it from rendering).
WEIGHT_SUM_EPS = 1e-4
# Forward warp: weight added to the root bone before normalising over bones, so that a point
# where every bone weight vanishes (outside the body region) moves rigidly with the root instead
# of dividing 0 by 0. Inside the body (Σ b ~ 1) it shifts x_k by ~1e-4 x (distance to the root
# transform's image), i.e. ~0.1 mm.
ROOT_FALLBACK_WEIGHT = 1e-4
# body_weight_prior: no interior point of a body is deeper than this below its surface (metres).
_MAX_INTERIOR_DEPTH = 0.3
# rest_surface_fields: signed distances are clipped to ±this (metres); also the value read
# outside the canonical box.
SDF_CLIP = 0.3
# subject_sdf: fixed-point steps inverting the shape displacement.
SHAPE_ITERATIONS = 4
# Floor on box extents in `normalise` (a degenerate, flat box).
_BOX_EPS = 1e-6
# 3x3 products in full float32 (GPUs otherwise may use TF32 for float32 dots).
_HI = jax.lax.Precision.HIGHEST

# HumanNeRF's Gaussian bone prior (core/utils/body_util.py): a bone's Gaussian is
# exp(-(a / s_along)^2 - (r / s_across)^2) with a, r the offsets along / across the bone from its
# midpoint (no factor 1/2: "std" s in HumanNeRF's sense), s = 2 x BONE_STDS.
BONE_STDS = (0.03, 0.06, 0.03)  # (across, along, across), metres
TORSO_ACROSS_SCALE = 1.5
JOINT_STD = 0.02  # leaf joints (feet, hands), isotropic
HEAD_STD = 0.06
TORSO_JOINTS = tuple(_js.SMPL_JOINT_NAMES.index(n) for n in
                     ("pelvis", "spine1", "spine2", "spine3", "left_collar", "right_collar"))
HEAD_JOINT = _js.SMPL_JOINT_NAMES.index("head")


class Box(NamedTuple):
    """Axis-aligned box: lo (3,), hi (3,) corners (x, y, z), metres."""
    lo: jax.Array
    hi: jax.Array


class MotionBases(NamedTuple):
    """Per-bone rigid maps x' = R_i x + t_i: R (..., J, 3, 3), t (..., J, 3) (metres).

    Which spaces they map between is set by the function that made them: `bone_transforms`
    (canonical -> observation, G_i) or `observation_to_canonical` (observation -> canonical, M_i).
    """
    R: jax.Array
    t: jax.Array


# ---------------------------------------------------------------------------------------------
# bones


def canonical_joints(body, betas) -> jax.Array:
    """Rest-pose (zero pose) joints of shape β: (J, 3) metres, canonical space.

    betas: (NB',) with NB' <= body.num_betas (missing coefficients are zero).
    """
    betas = jnp.asarray(betas, body.joint_template.dtype)
    nb = betas.shape[-1]
    if betas.ndim != 1 or nb > body.num_betas:
        raise ValueError(f"betas must have shape (NB',) with NB' <= {body.num_betas}, "
                         f"got {tuple(betas.shape)}")
    return body.joint_template + jnp.einsum("jcn,n->jc", body.joint_shapedirs[..., :nb], betas,
                                            precision=_HI)


def bone_transforms(body, pose, betas, transl=None) -> MotionBases:
    """Posed bone transforms G_i (canonical -> observation) of one frame.

    LBS of a canonical point x_c (zero pose, the subject's β) is x_obs = Σ_i w_i (R_i x_c + t_i),
    which for a body without pose correctives reproduces `smpl_jax.forward(...).vertices`.
    R_i is joint i's world rotation, t_i = p_i - R_i J_i + transl with J_i the rest joint and p_i
    the posed joint.

    Args:
      body: a `smpl_jax.BodyModel`.
      pose: (J, 3) axis-angle in radians or (J, 3, 3) rotation matrices; joint 0 is the root
        orientation, the others are relative to their parents.
      betas: (NB',) shape coefficients.
      transl: optional (3,) translation, metres.
    Returns:
      MotionBases with R (J, 3, 3), t (J, 3). Batch frames with jax.vmap.
    """
    dtype = body.joint_template.dtype
    nj = body.num_joints
    pose = jnp.asarray(pose, dtype)
    if pose.shape == (nj, 3):
        rot = axis_angle_to_matrix(pose)
    elif pose.shape == (nj, 3, 3):
        rot = pose
    else:
        raise ValueError(f"pose must have shape ({nj}, 3) or ({nj}, 3, 3) (one frame; vmap over "
                         f"frames), got {tuple(pose.shape)}")
    rest = canonical_joints(body, betas)
    R, p = _chain(rot, rest, body.parents)
    t = p - jnp.einsum("jab,jb->ja", R, rest, precision=_HI)
    if transl is not None:
        t = t + jnp.asarray(transl, dtype)
    return MotionBases(R, t)


def _chain(rot, rest, parents):
    """World rotations (J, 3, 3) and positions (J, 3) of the kinematic chain.

    Joint i's local transform is (rot_i, rest_i - rest_parent(i)) (the root's: (rot_0, rest_0)).
    The chains are composed by pointer jumping: each step composes every joint's partial
    transform with that of its current ancestor and moves the ancestor pointer up to the
    ancestor's, so the depth-9 SMPL tree takes 4 batched steps. (A 24-step loop of 3x3 products
    compiles ~4x slower on XLA:CPU.)
    """
    par = np.asarray(parents)
    nj = len(par)
    rel = rest - jnp.concatenate([jnp.zeros_like(rest[:1]), rest])[par + 1]
    rot_w, pos_w = rot, rel
    eye = jnp.eye(3, dtype=rot.dtype)[None]
    zero = jnp.zeros((1, 3), rot.dtype)
    anc = par.copy()
    while np.any(anc >= 0):
        idx = np.where(anc >= 0, anc, nj)  # nj: the identity transform
        rot_a = jnp.concatenate([rot_w, eye])[idx]
        pos_a = jnp.concatenate([pos_w, zero])[idx]
        pos_w = pos_a + jnp.einsum("jab,jb->ja", rot_a, pos_w, precision=_HI)
        rot_w = jnp.einsum("jab,jbc->jac", rot_a, rot_w, precision=_HI)
        anc = np.where(anc >= 0, anc[np.maximum(anc, 0)], -1)
    return rot_w, pos_w


def observation_to_canonical(bases: MotionBases) -> MotionBases:
    """Inverse of each rigid bone map: (R, t) -> (Rᵀ, -Rᵀ t), i.e. M_i = G_i^{-1}.

    R must be rotations (the inverse is the transpose). The map is its own inverse, so it also
    turns observation -> canonical bases M back into posed bone transforms G. Any leading dims.
    """
    rt = jnp.swapaxes(bases.R, -1, -2)
    return MotionBases(rt, -jnp.einsum("...ab,...b->...a", rt, bases.t, precision=_HI))


# ---------------------------------------------------------------------------------------------
# boxes and sampling


def observation_box(joints, margin=0.3) -> Box:
    """Box of joints (J, 3) ± margin metres (HumanNeRF: posed joints ± 0.3 m bounds the rays)."""
    joints = jnp.asarray(joints)
    return Box(jnp.min(joints, axis=0) - margin, jnp.max(joints, axis=0) + margin)


def canonical_box(body, betas=None, margin=0.3) -> Box:
    """Canonical box: rest joints of β (mean shape when None) ± margin metres (HumanNeRF's
    cnl_bbox, the extent of the skinning-weight volume)."""
    if betas is None:
        betas = jnp.zeros((body.num_betas,), body.joint_template.dtype)
    return observation_box(canonical_joints(body, betas), margin)


def normalise(points, box: Box):
    """Points (..., 3) in metres -> box coordinates in [-1, 1] (lo -> -1, hi -> +1 per axis)."""
    return safe_div(points - box.lo, box.hi - box.lo, _BOX_EPS) * 2.0 - 1.0


# (dx, dy, dz) of the 8 corners of a voxel cell.
_CORNER_OFFSETS = np.array(list(np.ndindex(2, 2, 2)), np.int32)[:, ::-1]


def _corners(points, dims):
    """The 8 trilinear corners of normalised points (..., 3) (x, y, z) in a (D, H, W) grid.

    Returns flat ids (..., 8) into the (D, H, W) grid (clipped into range) and weights (..., 8),
    0 for corners outside the grid (zero padding). align_corners=True: -1 and +1 are the centres
    of the first and last voxels.
    """
    d, h, w = dims
    size = np.array([w, h, d])
    pos = (points + 1.0) * 0.5 * (size - 1).astype(np.float32)
    # Beyond these bounds every corner is outside anyway; the clip keeps the int cast in range.
    pos = jnp.clip(pos, -1.5, (size + 0.5).astype(np.float32))
    base = jnp.floor(pos)
    frac = (pos - base)[..., None, :]  # the gradient w.r.t. the points flows through here
    idx = base.astype(jnp.int32)[..., None, :] + _CORNER_OFFSETS  # (..., 8, 3)
    inside = jnp.all((idx >= 0) & (idx < size), axis=-1)
    lerp = jnp.where(_CORNER_OFFSETS == 1, frac, 1.0 - frac)
    wts = lerp[..., 0] * lerp[..., 1] * lerp[..., 2]
    idx = jnp.clip(idx, 0, size - 1)
    ids = (idx[..., 2] * h + idx[..., 1]) * w + idx[..., 0]
    return ids, jnp.where(inside, wts, 0.0)


def trilinear(volume, points):
    """Trilinear sampling of a volume at normalised points (grid_sample, align_corners=True, zeros).

    Args:
      volume: (C, D, H, W); point (x, y, z) reads x along W, y along H, z along D.
      points: (..., 3) in [-1, 1] box coordinates (`normalise`); points outside read zeros (a
        point less than one voxel outside blends with the zero padding).
    Returns:
      (..., C). Written as a gather of the 8 corners and a lerp, differentiable w.r.t. points
      (piecewise linear per voxel) and volume.
    """
    c = volume.shape[0]
    ids, wts = _corners(points, volume.shape[1:])
    table = jnp.moveaxis(volume, 0, -1).reshape(-1, c)
    vals = jnp.take(table, ids, axis=0, mode="clip")  # (..., 8, C)
    return jnp.einsum("...k,...kc->...c", wts.astype(vals.dtype), vals, precision=_HI)


def _sample_per_channel(volume, points):
    """out[..., k] = trilinear(volume[k:k+1], points[..., k, :]): each channel at its own point.

    volume (K, D, H, W); points (..., K, 3) normalised. Returns (..., K).
    """
    k = volume.shape[0]
    ids, wts = _corners(points, volume.shape[1:])  # (..., K, 8)
    ids = ids + (np.arange(k, dtype=np.int32) * int(np.prod(volume.shape[1:])))[:, None]
    vals = jnp.take(volume.reshape(-1), ids, mode="clip")
    return jnp.sum(wts.astype(vals.dtype) * vals, axis=-1)


# ---------------------------------------------------------------------------------------------
# 𝒯


def _check_volume(volume, bases):
    nj = bases.R.shape[-3]
    if volume.ndim != 4 or volume.shape[0] < nj:
        raise ValueError(f"volume must have shape (C >= {nj}, D, H, W) (one frame's bases: vmap "
                         f"over frames), got {tuple(volume.shape)}")
    if bases.R.ndim != 3:
        raise ValueError(f"bases must be one frame's, R (J, 3, 3); got {tuple(bases.R.shape)}")
    return nj


def backward_warp(volume, box: Box, bases: MotionBases, x, *, sdf=None, softness=0.01):
    """𝒯: observation space -> canonical space (HumanNeRF's `_sample_motion_fields`).

        w_i(x) = W_i(normalise(M_i x)),  x_c = Σ_i w_i M_i x / max(Σ_i w_i, 1e-4),  fg = Σ_i w_i

    With `sdf` (the subject's rest signed distance, `subject_sdf`) each bone's candidate is also
    weighted by the rest surface's occupancy there, w_i(x) = W_i(M_i x) o(M_i x) with
    o = `surface_occupancy(sdf, ., softness)`, and fg = min(Σ_i w_i, 1): the foreground then
    ends at the surface (a `softness`-wide edge) instead of fading over the volume's voxels.
    `volume`'s bone channels should then be weights normalised over the bones (`bone_weights`).

    Args:
      volume: (J + 1, D, H, W) skinning weights over `box` (channel J, the background, unused;
        (J, D, H, W) from `bone_weights` is fine).
      box: the canonical box the volume covers.
      bases: observation -> canonical bases M of one frame (`observation_to_canonical`),
        R (J, 3, 3), t (J, 3).
      x: (..., 3) observation-space points, metres.
      sdf: optional (D', H', W') signed distance over the same box (`subject_sdf`); softness:
        metres, the width of the surface edge.
    Returns:
      x_c (..., 3) canonical points (0 where no bone has weight) and fg (...) the summed bone
      weight (~1 on the body, 0 far from it). Intermediates are ~(..., J, 8) corner ids and
      weights per point (~1.5 kB): chunk very large point sets.
    """
    nj = _check_volume(volume, bases)
    p = jnp.einsum("jab,...b->...ja", bases.R, x, precision=_HI) + bases.t  # (..., J, 3)
    pn = normalise(p, box)
    w = _sample_per_channel(volume[:nj], pn)  # (..., J)
    if sdf is not None:
        w = w * surface_occupancy(sdf, pn, softness)
    total = jnp.sum(w, axis=-1)
    x_c = safe_div(jnp.einsum("...j,...ja->...a", w, p, precision=_HI), total[..., None],
                   WEIGHT_SUM_EPS)
    return x_c, (total if sdf is None else jnp.minimum(total, 1.0))


def forward_warp(volume, box: Box, bases_k: MotionBases, x_c):
    """Canonical space -> frame k (ActorsNeRF's `tpose_points_to_pose_points`).

        b = W_bones(normalise(x_c)) / Σ,   x_k = (Σ_i b_i (M^k_i)^{-1}) x_c

    with the blended rigid transforms (rotations and translations blended separately, as the
    blended 4x4). A root weight of 1e-4 is added before normalising, so points with no bone weight
    (outside the body) follow the root bone.

    Args:
      volume: (J + 1, D, H, W) skinning weights over `box`.
      box: the canonical box.
      bases_k: frame k's observation -> canonical bases M^k (the same kind as for
        `backward_warp`), R (J, 3, 3), t (J, 3).
      x_c: (..., 3) canonical points, metres.
    Returns:
      x_k (..., 3) in frame k's observation space, metres.
    """
    nj = _check_volume(volume, bases_k)
    b = trilinear(volume[:nj], normalise(x_c, box))  # (..., J)
    b = b.at[..., 0].add(ROOT_FALLBACK_WEIGHT)
    b = safe_div(b, jnp.sum(b, axis=-1, keepdims=True), ROOT_FALLBACK_WEIGHT)
    posed = observation_to_canonical(bases_k)  # G^k_i = (M^k_i)^{-1}
    rot = jnp.einsum("...j,jab->...ab", b, posed.R, precision=_HI)
    trans = jnp.einsum("...j,ja->...a", b, posed.t, precision=_HI)
    return jnp.einsum("...ab,...b->...a", rot, x_c, precision=_HI) + trans


# ---------------------------------------------------------------------------------------------
# priors (numpy, computed once per subject)


def _check_smpl_layout(body):
    if tuple(body.parents) != _js.SMPL_PARENTS:
        raise ValueError("the skinning priors need the 24-joint SMPL kinematic tree")


def _np_betas(body, betas):
    if betas is None:
        return np.zeros((body.num_betas,), np.float32)
    return np.asarray(betas, np.float32)


def _grid_points(box: Box, resolution: int):
    """(R, R, R, 3) (x, y, z) voxel centres of `box`, indexed [z, y, x] (align_corners=True)."""
    lo, hi = np.asarray(box.lo, np.float64), np.asarray(box.hi, np.float64)
    xs, ys, zs = (np.linspace(lo[a], hi[a], resolution) for a in range(3))
    z, y, x = np.meshgrid(zs, ys, xs, indexing="ij")
    return np.stack([x, y, z], axis=-1)


def _with_background(bones):
    """(J, ...) bone weights -> (J + 1, ...) with background 1 - clip(Σ, 0, 1), renormalised."""
    bg = 1.0 - np.clip(bones.sum(axis=0, keepdims=True), 0.0, 1.0)
    out = np.concatenate([bones, bg], axis=0)
    return out / np.clip(out.sum(axis=0, keepdims=True), 1e-3, None)


def gaussian_bone_prior(body, betas=None, resolution=32, margin=0.3) -> np.ndarray:
    """HumanNeRF's Gaussian bone prior P (`approx_gaussian_bone_volumes`), numpy, float32.

    Channel j sums one anisotropic Gaussian per bone from joint j to a child: centred at the bone
    midpoint, std 2 x 0.06 m along the bone and 2 x 0.03 m across it (x 1.5 across for the torso
    joints pelvis, spine1-3, collars); a joint without children (feet, hands, head) gets an
    isotropic Gaussian at the joint, std 2 x 0.02 m (head 2 x 0.06 m). The background channel is
    1 - clip(Σ, 0, 1); the channels are renormalised to sum to 1 (HumanNeRF's floor 1e-3).

    Args:
      body: a 24-joint SMPL-layout `smpl_jax.BodyModel`; betas (NB',) or None (mean shape).
      resolution: voxels per axis R; margin: metres around the rest joints (`canonical_box`).
    Returns:
      (J + 1, R, R, R) probabilities over `canonical_box(body, betas, margin)`, indexed
      [c, z, y, x].
    """
    _check_smpl_layout(body)
    betas = _np_betas(body, betas)
    joints = np.asarray(canonical_joints(body, betas), np.float64)
    grid = _grid_points(canonical_box(body, betas, margin), resolution)
    along, across = 2.0 * BONE_STDS[1], 2.0 * BONE_STDS[0]
    channels = []
    for j in range(body.num_joints):
        children = [c for c, p in enumerate(body.parents) if p == j]
        vol = np.zeros(grid.shape[:-1])
        for c in children:
            axis = joints[c] - joints[j]
            axis = axis / max(np.linalg.norm(axis), 1e-9)
            d = grid - 0.5 * (joints[j] + joints[c])
            a = d @ axis
            r2 = np.maximum(np.sum(d * d, axis=-1) - a * a, 0.0)
            s = across * (TORSO_ACROSS_SCALE if j in TORSO_JOINTS else 1.0)
            vol += np.exp(-(a / along) ** 2 - r2 / s**2)
        if not children:
            s = 2.0 * (HEAD_STD if j == HEAD_JOINT else JOINT_STD)
            vol = np.exp(-np.sum((grid - joints[j]) ** 2, axis=-1) / s**2)
        channels.append(vol)
    return _with_background(np.stack(channels)).astype(np.float32)


def body_weight_prior(body, betas=None, resolution=32, margin=0.3, *,
                      falloff=0.05) -> np.ndarray:
    """Skinning prior from the body's own weights, numpy (scipy cKDTree), float32.

    Each voxel takes the skinning weights of the nearest point of the rest surface (β), found
    among dense samples of the mesh (vertices and a barycentric lattice on every face, spacing
    <= 2 cm; weights and vertex normals interpolated barycentrically, so it is the nearest-vertex
    rule made finer). The bone channels are those weights times a foreground
        fg = 1 inside the surface (the nearest sample's normal points away from the voxel),
        fg = exp(-(max(d - s, 0) / falloff)^2) outside, d the distance to that point,
    with s the voxel diagonal, so that the 8 voxels around any surface point are all foreground
    and a trilinear read on the surface gives fg = 1 at any resolution; the background is 1 - fg.
    Voxels farther than max(s + 5 falloff, 0.3 m) from the surface are pure background without
    an inside test (fg < 1e-10 outside; no point of a human body lies 0.3 m deep).
    The foreground thus reaches about 2 voxels + 2 falloff beyond the surface in a trilinear read.

    Args:
      body: a 24-joint SMPL-layout `smpl_jax.BodyModel` (a closed, outward-oriented mesh);
        betas (NB',) or None (mean shape); resolution R; margin metres (`canonical_box`);
        falloff: metres, decay of fg beyond the one-voxel shell.
    Returns:
      (J + 1, R, R, R) probabilities over `canonical_box(body, betas, margin)`, indexed
      [c, z, y, x].
    """
    _check_smpl_layout(body)
    betas = _np_betas(body, betas)
    box = canonical_box(body, betas, margin)
    grid = _grid_points(box, resolution).reshape(-1, 3)
    shell = np.linalg.norm((np.asarray(box.hi) - np.asarray(box.lo)) / max(resolution - 1, 1))
    # Voxels farther from the surface than both the outside reach (shell + 5 falloff: fg <
    # 1e-10) and the deepest interior point are left unmatched (pure background).
    near = _nearest_surface(_RestSurface.of(body, betas), grid,
                            max(shell + 5.0 * falloff, _MAX_INTERIOR_DEPTH))
    w = near.interpolate(np.asarray(body.weights, np.float64))
    fg = np.where(near.inside, 1.0,
                  np.exp(-(np.maximum(near.distance - shell, 0.0) / falloff) ** 2))
    fg = np.where(near.found, fg, 0.0)
    prior = np.concatenate([fg[:, None] * w, 1.0 - fg[:, None]], axis=1)
    prior /= prior.sum(axis=1, keepdims=True)
    return prior.T.reshape(-1, resolution, resolution, resolution).astype(np.float32)


class _RestSurface(NamedTuple):
    """Dense samples of a rest mesh (numpy, float64): vertices and a barycentric lattice on every
    face (spacing <= 2 cm), with the face and barycentrics of each sample, for nearest-surface
    queries that interpolate per-vertex quantities (skinning weights, normals, shape directions)."""
    verts: np.ndarray     # (V, 3)
    faces: np.ndarray     # (F, 3)
    normals: np.ndarray   # (V, 3) unit, area-weighted, outward for an outward-oriented mesh
    samples: np.ndarray   # (S, 3)
    face_of: np.ndarray   # (S,)
    bary_of: np.ndarray   # (S, 3)

    @classmethod
    def of(cls, body, betas) -> "_RestSurface":
        nb = betas.shape[0]
        verts = (np.asarray(body.v_template, np.float64)
                 + np.asarray(body.shapedirs, np.float64)[..., :nb] @ betas.astype(np.float64))
        faces = np.asarray(body.faces)
        tri = verts[faces]  # (F, 3, 3)
        face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # area-weighted
        vert_n = np.zeros_like(verts)
        for k in range(3):
            np.add.at(vert_n, faces[:, k], face_n)
        vert_n /= np.maximum(np.linalg.norm(vert_n, axis=-1, keepdims=True), 1e-12)
        # Barycentric lattices, n subdivisions per face edge so that samples are <= 2 cm apart.
        edge = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=-1).max(axis=1)
        subdiv = np.clip(np.ceil(edge / 0.02), 1, 16).astype(np.int64)
        samples, face_of, bary_of = [], [], []
        for n in np.unique(subdiv):
            ij = np.array([(i, j) for i in range(n + 1) for j in range(n + 1 - i)],
                          np.float64) / n
            bary = np.stack([1.0 - ij.sum(1), ij[:, 0], ij[:, 1]], axis=1)  # (K, 3)
            sel = np.flatnonzero(subdiv == n)
            samples.append(np.einsum("kb,fbc->fkc", bary, tri[sel]).reshape(-1, 3))
            face_of.append(np.repeat(sel, len(bary)))
            bary_of.append(np.tile(bary, (len(sel), 1)))
        return cls(verts, faces, vert_n, *(np.concatenate(a)
                                           for a in (samples, face_of, bary_of)))


class _Nearest(NamedTuple):
    """Nearest rest-surface sample of each query point (`_nearest_surface`)."""
    distance: np.ndarray  # (N,) metres (inf where not found)
    found: np.ndarray     # (N,) bool: a sample within the reach
    inside: np.ndarray    # (N,) bool: the nearest sample's normal points away from the point
    face: np.ndarray      # (N,) face of the nearest sample (0 where not found)
    bary: np.ndarray      # (N, 3) its barycentrics
    faces: np.ndarray     # (F, 3) the mesh's faces

    def interpolate(self, per_vertex):
        """(V, ...) per-vertex values -> (N, ...) at each point's nearest surface sample."""
        return np.einsum("nb,nb...->n...", self.bary, per_vertex[self.faces[self.face]])


def _nearest_surface(surface: _RestSurface, points, reach=np.inf) -> _Nearest:
    """Nearest surface samples of points (N, 3) within `reach` metres (scipy cKDTree; an
    unbalanced tree queries surface samples several times faster than scipy's default)."""
    from scipy.spatial import cKDTree  # numpy-side only; keeps `import motion` light

    tree = cKDTree(surface.samples, balanced_tree=False, compact_nodes=False)
    dist, idx = tree.query(points, distance_upper_bound=reach)
    found = np.isfinite(dist)
    idx = np.where(found, idx, 0)
    near = _Nearest(dist, found, np.zeros(len(points), bool), surface.face_of[idx],
                    surface.bary_of[idx], surface.faces)
    normal = near.interpolate(surface.normals)
    inside = found & (np.sum((points - surface.samples[idx]) * normal, axis=-1) < 0.0)
    return near._replace(inside=inside)


# ---------------------------------------------------------------------------------------------
# sharp occupancy from the rest surface


def rest_surface_fields(body, resolution=64, margin=0.3, shape_resolution=32) -> dict:
    """The mean-shape rest surface as volumes over `canonical_box(body, None, margin)`, numpy.

    Returns dict(
      sdf=(R, R, R): signed distance to the rest surface at β = 0 (negative inside), clipped to
        ±SDF_CLIP metres, indexed [z, y, x] like the skinning volume;
      shape_dirs=(NB, 3, R_s, R_s, R_s): the body's shape directions (metres per unit β_k) at
        each voxel's nearest surface point, R_s = shape_resolution (a smooth field: coarse)).
    `subject_sdf` turns them into one subject's signed distance; `surface_occupancy` reads it.
    """
    _check_smpl_layout(body)
    betas = _np_betas(body, None)
    box = canonical_box(body, betas, margin)
    surface = _RestSurface.of(body, betas)
    grid = _grid_points(box, resolution).reshape(-1, 3)
    near = _nearest_surface(surface, grid, SDF_CLIP)
    sdf = np.where(near.inside, -near.distance, np.minimum(near.distance, SDF_CLIP))
    sdf = np.where(near.found, sdf, SDF_CLIP)
    coarse = _grid_points(box, shape_resolution).reshape(-1, 3)
    dirs = _nearest_surface(surface, coarse).interpolate(
        np.asarray(body.shapedirs, np.float64))  # (N, 3, NB)
    dirs = np.moveaxis(dirs, 0, -1).reshape((3, body.num_betas) + (shape_resolution,) * 3)
    return {"sdf": sdf.reshape((resolution,) * 3).astype(np.float32),
            "shape_dirs": np.swapaxes(dirs, 0, 1).astype(np.float32)}


def subject_sdf(fields, box: Box, betas) -> jax.Array:
    """One subject's signed distance volume (R, R, R) from `rest_surface_fields` and β (NB',).

    The rest body of shape β is the mean body displaced by D(y) = Σ_k β_k S_k(y) (S the shape
    directions of the mean body's nearest surface point to y), so sdf_β(x) ≈ sdf_0(y) with y
    the mean-body point that moves to x, y + D(y) = x (found by a few fixed-point steps; exact
    on the surface up to the volumes' interpolation, approximate off it). Jit-able,
    differentiable w.r.t. β; costs one read of the volume per voxel (compute it once per frame,
    not per ray).
    """
    sdf0, dirs = fields["sdf"], fields["shape_dirs"]
    betas = jnp.asarray(betas, sdf0.dtype)
    nb = betas.shape[-1]
    if betas.ndim != 1 or nb > dirs.shape[0]:
        raise ValueError(f"betas must have shape (NB',) with NB' <= {dirs.shape[0]}, "
                         f"got {tuple(betas.shape)}")
    r = sdf0.shape[0]
    axis = jnp.linspace(-1.0, 1.0, r, dtype=sdf0.dtype)
    z, y, x = jnp.meshgrid(axis, axis, axis, indexing="ij")
    grid = jnp.stack([x, y, z], axis=-1)  # normalised voxel centres, [z, y, x]
    disp = jnp.einsum("k,kc...->c...", betas, dirs[:nb], precision=_HI)  # (3, Rs, Rs, Rs)
    # The mean-body point y of the subject's point x solves x = y + D(y): fixed-point iteration
    # y <- x - D(y) from y = x (a contraction: D varies slowly over the body).
    x = box.lo + (grid + 1.0) * 0.5 * (box.hi - box.lo)
    y = x
    for _ in range(SHAPE_ITERATIONS):
        y = x - trilinear(disp, normalise(y, box))
    return _read_sdf(sdf0, normalise(y, box))


def _read_sdf(sdf, points):
    """Trilinear read of a signed distance volume at normalised points, +SDF_CLIP outside."""
    return trilinear(sdf[None] - SDF_CLIP, points)[..., 0] + SDF_CLIP


def surface_occupancy(sdf, points, softness):
    """sigmoid(-sdf(x) / softness) at normalised points (...): ~1 inside the surface, 0.5 on it,
    ~0 outside, the transition `softness` metres wide (read after interpolating the distance,
    so the edge stays sharp at any volume resolution)."""
    return jax.nn.sigmoid(-_read_sdf(sdf, points) / softness)


def bone_weights(volume) -> jax.Array:
    """(J + 1, ...) skinning volume -> (J, ...) bone weights normalised over the bones (the
    background channel and the volume's own foreground removed; 0 where no bone has weight),
    for `backward_warp(..., sdf=...)`."""
    bones = volume[:-1]
    return safe_div(bones, jnp.sum(bones, axis=0, keepdims=True), WEIGHT_SUM_EPS)


# ---------------------------------------------------------------------------------------------
# learned volume


def _blockwise(init):
    """HumanNeRF's block-wise init of stride-2 transposed convs: every stride phase of the 4^3
    kernel gets the same weights (kernel[a, b, c] = kernel[a - a % 2, ...]), so the first output
    has no checkerboard."""
    def f(key, shape, dtype=jnp.float32):
        k = init(key, shape, dtype)[0::2, 0::2, 0::2]
        for axis in range(3):
            k = jnp.repeat(k, 2, axis=axis)
        return k
    return f


def _xavier(gain, receptive=1):
    """HumanNeRF's xavier_uniform (std = gain sqrt(2 / ((n_in + n_out) k))) with k the taps that
    reach one output (kernel volume / stride^3 = 8 for its transposed convs); flax's fan_avg
    counts the whole kernel volume, hence the factor `receptive` = kernel volume / k."""
    return nn.initializers.variance_scaling(gain**2 * receptive, "fan_avg", "uniform")


class SkinningVolume(nn.Module):
    """Learned skinning-weight volume W = softmax_c(Dec(e) + log P) (HumanNeRF's
    `deconv_vol_decoder` with `ConvDecoder3D`).

    e: a learned constant code (embedding_size,) ~ N(0, 1). Dec: Dense(embedding_size -> 1024) +
    LeakyReLU(0.2), a 1^3 x 1024 volume, then log2(resolution) transposed convs (kernel 4,
    stride 2, torch padding 1: each exactly doubles the size, 1 -> 2 -> ... -> resolution) with
    `widths[:log2(resolution) - 1]` channels and LeakyReLU(0.2), the last with `num_channels`
    outputs and no activation. Inits are HumanNeRF's (xavier uniform with the LeakyReLU gain,
    block-wise transposed-conv kernels, zero biases) except that the last layer's gain is
    `final_gain` (small), so that at init W ≈ P.

    __call__(log_prior (C, R, R, R), indexed [c, z, y, x] as the priors) -> weights (C, R, R, R)
    summing to 1 over c. log_prior = jnp.log(prior) is fine where the prior is 0 (-inf: that
    channel stays exactly 0 there, as in HumanNeRF), as long as some channel is positive at
    every voxel (true of both priors here).
    """
    resolution: int = 32
    num_channels: int = 25
    embedding_size: int = 256
    widths: Sequence[int] = (512, 512, 256, 256)
    final_gain: float = 1e-2

    @nn.compact
    def __call__(self, log_prior):
        ups = int(round(np.log2(self.resolution)))
        if self.resolution < 2 or 2**ups != self.resolution:
            raise ValueError(f"resolution must be a power of 2 >= 2, got {self.resolution}")
        if len(self.widths) < ups - 1:
            raise ValueError(f"resolution {self.resolution} needs {ups - 1} widths, got "
                             f"{tuple(self.widths)}")
        shape = (self.num_channels,) + (self.resolution,) * 3
        if log_prior.shape != shape:
            raise ValueError(f"log_prior must have shape {shape}, got {tuple(log_prior.shape)}")
        leaky_gain = float(np.sqrt(2.0 / (1.0 + 0.2**2)))  # torch calculate_gain('leaky_relu')
        e = self.param("embedding", nn.initializers.normal(1.0), (self.embedding_size,))
        h = nn.leaky_relu(nn.Dense(1024, kernel_init=_xavier(leaky_gain), name="mlp")(e), 0.2)
        h = h.reshape(1, 1, 1, 1, 1024)  # NDHWC
        # Torch ConvTranspose3d(k=4, s=2, p=1) = lax.conv_transpose padding k - 1 - p = 2.
        deconv = dict(kernel_size=(4, 4, 4), strides=(2, 2, 2), padding=((2, 2),) * 3)
        for k, width in enumerate(self.widths[:ups - 1]):
            h = nn.ConvTranspose(width, kernel_init=_blockwise(_xavier(leaky_gain, 8)),
                                 name=f"deconv{k}", **deconv)(h)
            h = nn.leaky_relu(h, 0.2)
        h = nn.ConvTranspose(self.num_channels,
                             kernel_init=_blockwise(_xavier(self.final_gain, 8)),
                             name="deconv_out", **deconv)(h)
        logits = jnp.moveaxis(h[0], -1, 0)
        return jax.nn.softmax(logits + log_prior.astype(logits.dtype), axis=0)
