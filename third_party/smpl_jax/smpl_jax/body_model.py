"""SMPL body model as an immutable pytree, and its forward pass (shape, pose correctives, forward
kinematics, linear blend skinning).

Written from the SMPL equations (Loper et al. 2015):

    v_shaped = T + S beta                          T = v_template, S = shapedirs
    J        = J_regressor v_shaped                 rest-pose joints, computed as J_T + J_S beta
    v_posed  = v_shaped + P vec(R_1..R_23 - I)      P = posedirs (pose correctives)
    G_0 = R_0, p_0 = J_0;  G_i = G_par(i) R_i,  p_i = p_par(i) + G_par(i) (J_i - J_par(i))
    v        = sum_i w_i (G_i v_posed + p_i - G_i J_i)        (linear blend skinning)

with 3x3 rotations and translations kept apart (no 4x4 homogeneous matrices). Units: lengths in
metres, angles in radians.

Why one module: the forward pass and its hand-written VJP (`_lbs_bwd`) must change together; the
VJP reuses the forward's intermediates, so keeping them side by side is what keeps them in step.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from smpl_jax import joint_sets as _js
from smpl_jax.rotations import axis_angle_to_matrix


@struct.dataclass
class JointRegressor:
    """Joints regressed from mesh vertices, stored compactly on the vertices they read.

    Besides the regression weights it holds the body model's arrays restricted to those vertices
    (built at load time), so that ``forward(..., return_vertices=False)`` skins only them.

    Attributes:
      support: (S,) int32 ids of the vertices with a nonzero weight in at least one row.
      weights: (K, S) regression weights; joint k = sum_s weights[k, s] * vertex[support[s]].
      v_template: (S, 3), shapedirs: (S, 3, NB), posedirs: (P, S*3) or None, skin_weights:
        (S, J): the model's v_template, shapedirs, posedirs and weights on the support.
    """

    support: jax.Array
    weights: jax.Array
    v_template: jax.Array
    shapedirs: jax.Array
    posedirs: Optional[jax.Array]
    skin_weights: jax.Array

    @property
    def num_joints(self) -> int:
        return self.weights.shape[0]


def make_joint_regressor(rows, v_template, shapedirs, posedirs, weights, dtype=np.float32):
    """Build a :class:`JointRegressor` from dense (K, V) rows and the model's numpy arrays.

    posedirs is in the (P, V*3) layout or None.
    """
    rows = np.asarray(rows)
    support = np.flatnonzero(np.any(rows != 0, axis=0)).astype(np.int32)
    if support.size == 0:
        support = np.zeros(1, np.int32)
    sub_pd = None
    if posedirs is not None:
        p = posedirs.shape[0]
        sub_pd = np.asarray(posedirs).reshape(p, -1, 3)[:, support].reshape(p, -1)
    arr = lambda x: jnp.asarray(x, dtype)
    return JointRegressor(
        support=jnp.asarray(support), weights=arr(rows[:, support]),
        v_template=arr(np.asarray(v_template)[support]),
        shapedirs=arr(np.asarray(shapedirs)[support]),
        posedirs=None if sub_pd is None else arr(sub_pd),
        skin_weights=arr(np.asarray(weights)[support]))


@struct.dataclass
class BodyModel:
    """An SMPL-layout body model: arrays are pytree children, the kinematic tree is static.

    Build one with :func:`smpl_jax.load` (or :func:`smpl_jax.io.from_arrays`); pass it to
    :func:`smpl_jax.forward` as an ordinary (jit) argument. All float arrays share one dtype
    (float32 unless built otherwise; see :meth:`astype`).

    Attributes:
      v_template: (V, 3) rest-pose vertices of the mean shape, metres.
      shapedirs: (V, 3, NB) shape blend shapes (metres per unit beta).
      posedirs: (P, V*3) pose-corrective blend shapes, P = 9 * (J - 1) = 207, row k is the
        corrective for entry k of vec(R_1 - I, ..., R_23 - I) (row-major 3x3 blocks); or None when
        the model has no (or all-zero) pose correctives, in which case that product is skipped.
      J_regressor: (J, V) dense joint regressor (rest-pose joints from rest-pose vertices).
      weights: (V, J) skinning weights, rows sum to 1.
      faces: (F, 3) int32 triangle vertex ids.
      joint_template: (J, 3) J_regressor @ v_template.
      joint_shapedirs: (J, 3, NB) J_regressor applied to shapedirs, so that rest joints are
        joint_template + joint_shapedirs @ betas without building the mesh.
      regressors: extra joint regressors by key ('vertex21', 'extra9', 'h36m17'; see
        :mod:`smpl_jax.joint_sets`), each a :class:`JointRegressor`.
      parents: static tuple of J parent ids, parents[0] == -1, parents[i] < i.
    """

    v_template: jax.Array
    shapedirs: jax.Array
    posedirs: Optional[jax.Array]
    J_regressor: jax.Array
    weights: jax.Array
    faces: jax.Array
    joint_template: jax.Array
    joint_shapedirs: jax.Array
    regressors: Mapping[str, JointRegressor]
    parents: tuple = struct.field(pytree_node=False, default=_js.SMPL_PARENTS)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def has_pose_correctives(self) -> bool:
        return self.posedirs is not None

    @property
    def joint_sets(self) -> tuple[str, ...]:
        """Names of the extra joint sets this model can return."""
        return tuple(n for n in _js.JOINT_SET_NAMES
                     if all(k in self.regressors for k in _js.required_regressors((n,))))

    def astype(self, dtype) -> "BodyModel":
        """The same model with every floating-point array cast to ``dtype`` (ints untouched)."""
        def cast(x):
            return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
        return jax.tree_util.tree_map(cast, self)


class BodyOutput(NamedTuple):
    """Result of :func:`forward`.

    Attributes:
      vertices: (B, V, 3) posed mesh vertices in metres, or None when
        ``return_vertices=False``.
      joints: (B, 24 + K, 3) joints in metres: the 24 posed skeleton joints, then the requested
        extra sets in order (K = sum of their sizes).
    """

    vertices: Optional[jax.Array]
    joints: jax.Array


# ---------------------------------------------------------------------------------------------
# forward


def _check_inputs(model: BodyModel, pose, betas, transl):
    nj = model.num_joints
    pose = jnp.asarray(pose)
    if pose.ndim == 3 and pose.shape[1:] == (nj, 3):
        is_matrix = False
    elif pose.ndim == 4 and pose.shape[1:] == (nj, 3, 3):
        is_matrix = True
    else:
        hint = ""
        if pose.ndim == 2 and pose.shape[-1] == 3 * nj:
            hint = f" (reshape a flat axis-angle vector with pose.reshape(-1, {nj}, 3))"
        elif pose.ndim in (2, 3) and pose.shape[0] == nj:
            hint = " (add a leading batch axis, e.g. pose[None])"
        raise ValueError(f"pose must have shape (B, {nj}, 3) or (B, {nj}, 3, 3), got "
                         f"{tuple(pose.shape)}{hint}")
    batch = pose.shape[0]
    betas = jnp.asarray(betas)
    if betas.ndim != 2 or betas.shape[0] not in (batch, 1):
        raise ValueError(f"betas must have shape (B, num_betas) with B = {batch} (or 1) and "
                         f"num_betas <= {model.num_betas}, got {tuple(betas.shape)}")
    if betas.shape[1] > model.num_betas:
        raise ValueError(f"betas has {betas.shape[1]} coefficients but the model holds "
                         f"{model.num_betas} (load it with a larger num_betas if the file has "
                         "more)")
    if transl is not None:
        transl = jnp.asarray(transl)
        if transl.ndim != 2 or transl.shape[0] not in (batch, 1) or transl.shape[1] != 3:
            raise ValueError(f"transl must have shape (B, 3) with B = {batch} (or 1), got "
                             f"{tuple(transl.shape)}")
    return pose, is_matrix, betas, transl


def _check_parents(parents: Sequence[int]) -> np.ndarray:
    par = np.asarray(parents, dtype=np.int64)
    if par.ndim != 1 or par[0] != -1 or any(not 0 <= p < i for i, p in enumerate(par) if i > 0):
        raise ValueError(f"parents must have parents[0] == -1 and 0 <= parents[i] < i, "
                         f"got {tuple(parents)}")
    return par


def _forward_kinematics(rot, rest_joints, parents):
    """World rotations and positions of the kinematic chain, with 3x3 rotations + translations.

    Each joint's local transform is (R_i, J_i - J_parent(i)) (the root's is (R_0, J_0)); its world
    transform is the composition along its chain of ancestors. The chains are composed by pointer
    jumping: every step composes each joint's partial transform with that of its current
    ancestor, then jumps the ancestor pointer, so the 9-deep SMPL tree needs 4 steps of batched
    3x3 products over all joints (one static gather each) instead of 23 sequential ones.

    Args:
      rot: (B, J, 3, 3) local (parent-relative) joint rotations.
      rest_joints: (B, J, 3) rest-pose joint positions.
      parents: static parent ids.
    Returns:
      glob_rot (B, J, 3, 3) world rotations; glob_pos (B, J, 3) posed joint positions.
    """
    par = _check_parents(parents)
    nj = len(par)
    batch = rot.shape[0]
    parent_pos = jnp.concatenate([jnp.zeros_like(rest_joints[:, :1]), rest_joints], axis=1)
    glob_rot, glob_pos = rot, rest_joints - parent_pos[:, par + 1]
    eye = jnp.broadcast_to(jnp.eye(3, dtype=rot.dtype), (batch, 1, 3, 3))
    origin = jnp.zeros((batch, 1, 3), rot.dtype)
    ancestor = par.copy()
    while np.any(ancestor >= 0):
        idx = np.where(ancestor >= 0, ancestor, nj)  # index nj: the identity transform
        anc_rot = jnp.concatenate([glob_rot, eye], axis=1)[:, idx]
        anc_pos = jnp.concatenate([glob_pos, origin], axis=1)[:, idx]
        glob_pos = anc_pos + jnp.einsum("bjik,bjk->bji", anc_rot, glob_pos)
        glob_rot = jnp.einsum("bjik,bjkl->bjil", anc_rot, glob_rot)
        ancestor = np.where(ancestor >= 0, ancestor[np.maximum(ancestor, 0)], -1)
    return glob_rot, glob_pos


# Skinning runs over chunks of vertices inside a loop, so that every chunk reuses one scratch
# block of about _CHUNK_BYTES for its (B*12, chunk) blended transforms, and the shape blend is
# recomputed per chunk instead of being stored as a (B, V, 3) array. Without this XLA:CPU keeps
# all blocks alive at once (a (B*12, V) array alone is 37 MB at V = 12k, B = 64); its per-call
# scratch allocation then exceeds glibc's 32 MB mmap threshold and every call pays page faults on
# fresh pages, which measured several times slower than the arithmetic itself.
_CHUNK_BYTES = 4 << 20


def _chunking(num_points, batch):
    """Static (chunk size, number of chunks) for skinning ``num_points`` points."""
    size = max(128, (_CHUNK_BYTES // (48 * max(batch, 1))) // 128 * 128)
    size = min(size, num_points)
    return size, -(-num_points // size)


def _rigid_rows(rigid):
    """(B, J, 3, 4) -> (B*12, J): row b*12 + m holds entry m of the row-major 3x4 of every joint."""
    batch, nj = rigid.shape[:2]
    return jnp.swapaxes(rigid.reshape(batch, nj, 12), 1, 2).reshape(batch * 12, nj)


def _rest_points(v_template, shapedirs, betas, offsets):
    """v_template (n, 3) + shapedirs (n, 3, NB) . betas (B, NB) [+ offsets (B, n, 3)]."""
    n, nb = v_template.shape[0], shapedirs.shape[-1]
    # One (B, NB) x (NB, n*3) product.
    points = v_template + (betas @ shapedirs.reshape(n * 3, nb).T).reshape(-1, n, 3)
    return points if offsets is None else points + offsets


def _blend_apply(rows, weights, points):
    """rows (B*12, J), weights (n, J), points (B, n, 3) -> skinned points (B, n, 3)."""
    batch = points.shape[0]
    # (B*12, J) x (J, n): one GEMM with a long free dimension, batch-major output.
    t = jnp.swapaxes((rows @ weights.T).reshape(batch, 12, -1), 1, 2)  # (B, n, 12)
    return (t[..., 0::4] * points[..., 0:1] + t[..., 1::4] * points[..., 1:2]
            + t[..., 2::4] * points[..., 2:3] + t[..., 3::4])


def _chunk(x, start, size, axis):
    return None if x is None else jax.lax.dynamic_slice_in_dim(x, start, size, axis)


def _lbs_impl(weights, rigid, v_template, shapedirs, betas, offsets):
    batch = rigid.shape[0]
    n = v_template.shape[0]
    rows = _rigid_rows(rigid)
    size, count = _chunking(n, batch)
    if count == 1:
        return _blend_apply(rows, weights, _rest_points(v_template, shapedirs, betas, offsets))

    def body(i, out):
        # The last chunk is shifted back to end at n, overlapping its predecessor: every chunk
        # has the same static size and no tail computation is needed.
        s = jnp.minimum(i * size, n - size)
        points = _rest_points(_chunk(v_template, s, size, 0), _chunk(shapedirs, s, size, 0),
                              betas, _chunk(offsets, s, size, 1))
        chunk = _blend_apply(rows, _chunk(weights, s, size, 0), points)
        return jax.lax.dynamic_update_slice_in_dim(out, chunk, s, 1)

    return jax.lax.fori_loop(0, count, body, jnp.zeros((batch, n, 3), rigid.dtype))


@jax.custom_vjp
def _lbs(weights, rigid, v_template, shapedirs, betas, offsets):
    """Shape blend plus linear blend skinning, in vertex chunks.

    out[b, n] = sum_j weights[n, j] (R_bj p[b, n] + t_bj) with rest points
    p = v_template + shapedirs . betas (+ offsets, the pose correctives).

    Args: weights (N, J); rigid (B, J, 3, 4) = [R | t]; v_template (N, 3); shapedirs (N, 3, NB);
      betas (B, NB); offsets (B, N, 3) or None. Returns (B, N, 3).
    """
    return _lbs_impl(weights, rigid, v_template, shapedirs, betas, offsets)


_LBS_ARGS = ("weights", "rigid", "v_template", "shapedirs", "betas", "offsets")


def _lbs_fwd(*args):
    # With symbolic_zeros, every array argument arrives as CustomVJPPrimal(value, perturbed).
    values = [None if a is None else a.value for a in args]
    # Which cotangents are wanted, kept static as pytree structure (() = wanted, None = not).
    wanted = tuple(() if a is not None and a.perturbed else None for a in args)
    return _lbs_impl(*values), (*values, wanted)


def _chunk_bwd(rows, weights, v_template, shapedirs, betas, offsets, g, wanted):
    """Cotangents (dict, wanted ones only) of one chunk's skinning, recomputing the chunk."""
    batch, n = g.shape[:2]
    points = _rest_points(v_template, shapedirs, betas, offsets)
    hom = jnp.concatenate([points, jnp.ones_like(points[..., :1])], axis=-1)  # (B, n, 4)
    d_blended = (g[..., :, None] * hom[..., None, :]).reshape(batch, n, 12)
    d_blended = jnp.swapaxes(d_blended, 1, 2).reshape(batch * 12, n)
    t = jnp.swapaxes((rows @ weights.T).reshape(batch, 12, n), 1, 2)  # (B, n, 12)
    d_points = g[..., 0:1] * t[..., 0:3] + g[..., 1:2] * t[..., 4:7] + g[..., 2:3] * t[..., 8:11]
    out = {}
    if "rigid" in wanted:
        out["rigid"] = d_blended @ weights  # (B*12, J)
    if "betas" in wanted:
        out["betas"] = d_points.reshape(batch, n * 3) @ shapedirs.reshape(n * 3, -1)
    if "weights" in wanted:
        out["weights"] = d_blended.T @ rows
    if "v_template" in wanted:
        out["v_template"] = jnp.sum(d_points, axis=0)
    if "shapedirs" in wanted:
        out["shapedirs"] = jnp.einsum("bnc,bk->nck", d_points, betas)
    if "offsets" in wanted:
        out["offsets"] = d_points
    return out


# Cotangents summed over chunks, and those stored per vertex (with their vertex axis).
_SUMMED = ("rigid", "betas")
_PER_VERTEX = {"weights": 0, "v_template": 0, "shapedirs": 0, "offsets": 1}


def _lbs_bwd(res, g):
    # Written by hand, chunk by chunk, so that every large array stays batch-major and nothing of
    # size (B*12, N) or (B, N, 3) is kept between the passes (chunks are recomputed: products
    # with K = J and K = NB); only the cotangents of differentiated inputs are computed.
    # Autodiff of the forward instead relayouts (B, N, 12) <-> (N, B, 12) arrays and stores
    # every chunk, which measured ~3x slower on CPU.
    *values, wanted = res
    weights, rigid, v_template, shapedirs, betas, offsets = values
    wanted = tuple(k for k, w in zip(_LBS_ARGS, wanted) if w is not None)
    if isinstance(g, jax.custom_derivatives.SymbolicZero) or not wanted:
        return (None,) * len(_LBS_ARGS)
    batch, nj = rigid.shape[:2]
    n = v_template.shape[0]
    rows = _rigid_rows(rigid)
    size, count = _chunking(n, batch)
    if count == 1:
        d = _chunk_bwd(rows, weights, v_template, shapedirs, betas, offsets, g, wanted)
    else:
        shapes = dict(rigid=rows, betas=betas, weights=weights, v_template=v_template,
                      shapedirs=shapedirs, offsets=g)
        zeros = {k: jnp.zeros_like(shapes[k]) for k in wanted}

        def body(i, acc):
            s = jnp.minimum(i * size, n - size)
            # Points of the shifted last chunk that its predecessor covered count once.
            fresh = (s + jnp.arange(size) >= i * size).astype(g.dtype)
            d = _chunk_bwd(rows, _chunk(weights, s, size, 0), _chunk(v_template, s, size, 0),
                           _chunk(shapedirs, s, size, 0), betas, _chunk(offsets, s, size, 1),
                           _chunk(g, s, size, 1) * fresh[None, :, None], wanted)
            out = {}
            for key in wanted:
                if key in _SUMMED:
                    out[key] = acc[key] + d[key]
                else:
                    axis = _PER_VERTEX[key]
                    keep = (1 - fresh).reshape((-1,) + (1,) * (d[key].ndim - 1 - axis))
                    prev = _chunk(acc[key], s, size, axis)
                    out[key] = jax.lax.dynamic_update_slice_in_dim(
                        acc[key], d[key] + keep * prev, s, axis)
            return out

        d = jax.lax.fori_loop(0, count, body, zeros)
    if "rigid" in d:
        d["rigid"] = jnp.swapaxes(d["rigid"].reshape(batch, 12, nj), 1, 2).reshape(
            batch, nj, 3, 4)
    return tuple(d.get(k) for k in _LBS_ARGS)


_lbs.defvjp(_lbs_fwd, _lbs_bwd, symbolic_zeros=True)


def _skin(v_template, shapedirs, posedirs, weights, betas, pose_feature, glob_rot, skin_trans,
          fast_vjp=True):
    """Shape, pose-correct and skin a set of vertices.

    Args:
      v_template (N, 3), shapedirs (N, 3, NB'), posedirs (P, N*3) or None, weights (N, J),
      betas (B or 1, NB'), pose_feature (B, P) or None, glob_rot (B, J, 3, 3),
      skin_trans (B, J, 3) = glob_pos - glob_rot @ rest_joints.
    Returns:
      (B, N, 3) posed vertices.
    """
    batch = glob_rot.shape[0]
    offsets = None
    if posedirs is not None:
        offsets = (pose_feature @ posedirs).reshape(batch, -1, 3)
    rigid = jnp.concatenate([glob_rot, skin_trans[..., None]], axis=-1)  # (B, J, 3, 4)
    betas = jnp.broadcast_to(betas, (batch, betas.shape[1]))
    lbs = _lbs if fast_vjp else _lbs_impl
    return lbs(weights, rigid, v_template, shapedirs, betas, offsets)


def forward(model: BodyModel, pose, betas, transl=None, *, extra_joints=(),
            return_vertices: bool = True, fast_vjp: bool = True) -> BodyOutput:
    """Posed SMPL mesh and joints.

    Args:
      model: a :class:`BodyModel`.
      pose: (B, 24, 3) axis-angle in radians, or (B, 24, 3, 3) rotation matrices (told apart by
        shape); joint 0 is the global orientation, joints 1..23 are relative to their parents.
      betas: (B, NB') shape coefficients, NB' <= model.num_betas (the first NB' shape directions
        are used, i.e. the missing coefficients are zero); a leading 1 broadcasts over B.
      transl: optional (B, 3) (or (1, 3)) translation in metres, added to vertices and joints.
      extra_joints: a joint-set name or a sequence of them (see :mod:`smpl_jax.joint_sets`:
        'vertex21', 'extra9', 'h36m17', 'lsp14', 'spin49'), appended after the 24 skeleton joints.
        Must be static under jit (use ``static_argnames``).
      return_vertices: False takes a joints-only path that never builds the full mesh: skeleton
        joints from the precomputed joint template/shape dirs plus forward kinematics, extra
        joints by skinning only the vertices their regressors read. Static under jit.
      fast_vjp: True (default) skins with a hand-written reverse-mode derivative; False uses
        plain autodiff of the same computation, which also supports forward mode (``jax.jvp``,
        ``jacfwd``, ``hessian``, Gauss-Newton solvers) at ~3x the reverse-mode cost on CPU.
        Static under jit.

    Returns:
      :class:`BodyOutput` with vertices (B, V, 3) (None if ``return_vertices=False``) and joints
      (B, 24 + K, 3), in metres, in the model's dtype.

    Transformations:
      * ``jax.jit``: ``jax.jit(forward, static_argnames=("extra_joints", "return_vertices"))``;
        pass the model as an argument rather than closing over it, so that its arrays are not
        baked into the program as constants.
      * reverse-mode autodiff (``jax.grad``, ``vjp``, ``jacrev``) with respect to pose, betas
        and transl (and the model's arrays). The skinning step has a hand-written VJP
        (``jax.custom_vjp``, ~3x faster on CPU than autodiff of it), so forward-mode
        (``jax.jvp``, ``jacfwd``, ``hessian``) needs ``fast_vjp=False``.
      * ``jax.vmap``: every input needs its batch axis, so to vmap over single samples give each
        a batch axis of size 1 (e.g. ``vmap(f)(pose[:, None], betas[:, None])``), or vmap over
        an outer axis of batched inputs.
    """
    pose, is_matrix, betas, transl = _check_inputs(model, pose, betas, transl)
    names = _js.normalize_request(extra_joints)
    keys = _js.required_regressors(names)
    for name in names:
        for key in _js.required_regressors((name,)):
            if key not in model.regressors:
                raise ValueError(_js.missing_regressor_message(name, key))

    dtype = model.v_template.dtype
    pose = pose.astype(dtype)
    betas = betas.astype(dtype)
    nb = betas.shape[1]
    rot = pose if is_matrix else axis_angle_to_matrix(pose)
    batch = rot.shape[0]

    rest_joints = model.joint_template + jnp.einsum(
        "bn,jcn->bjc", betas, model.joint_shapedirs[..., :nb])
    rest_joints = jnp.broadcast_to(rest_joints, (batch,) + model.joint_template.shape)
    glob_rot, glob_pos = _forward_kinematics(rot, rest_joints, model.parents)
    skin_trans = glob_pos - jnp.einsum("bjik,bjk->bji", glob_rot, rest_joints)

    pose_feature = None
    if model.posedirs is not None:
        eye = jnp.eye(3, dtype=dtype)
        pose_feature = (rot[:, 1:] - eye).reshape(batch, -1)

    vertices = None
    regressed = {}
    if return_vertices:
        vertices = _skin(model.v_template, model.shapedirs[..., :nb], model.posedirs,
                         model.weights, betas, pose_feature, glob_rot, skin_trans, fast_vjp)
        for key in keys:
            reg = model.regressors[key]
            regressed[key] = jnp.einsum("ks,bsc->bkc", reg.weights,
                                        jnp.take(vertices, reg.support, axis=1))
    elif keys:
        # Skin only the vertices that the requested regressors read: their supports, with the
        # model arrays restricted to them at load time, concatenated (a vertex that two
        # requested regressors share is skinned twice; the supports are small).
        regs = [model.regressors[k] for k in keys]
        cat = lambda xs, axis=0: xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=axis)
        posedirs = None
        if model.posedirs is not None:
            posedirs = cat([r.posedirs for r in regs], axis=1)
        sub = _skin(cat([r.v_template for r in regs]),
                    cat([r.shapedirs[..., :nb] for r in regs]), posedirs,
                    cat([r.skin_weights for r in regs]), betas, pose_feature,
                    glob_rot, skin_trans, fast_vjp)
        start = 0
        for key, reg in zip(keys, regs):
            size = reg.support.shape[0]
            regressed[key] = jnp.einsum("ks,bsc->bkc", reg.weights, sub[:, start:start + size])
            start += size

    parts = [glob_pos]
    for name in names:
        if name in ("vertex21", "extra9", "h36m17"):
            parts.append(regressed[name])
        elif name == "lsp14":
            parts.append(regressed["h36m17"][:, np.asarray(_js.H36M_TO_J14)])
        elif name == "spin49":
            j54 = jnp.concatenate([glob_pos, regressed["vertex21"], regressed["extra9"]], axis=1)
            parts.append(j54[:, np.asarray(_js.SPIN49_FROM_J54)])
    joints = jnp.concatenate(parts, axis=1) if len(parts) > 1 else glob_pos

    if transl is not None:
        transl = transl.astype(dtype)[:, None, :]
        joints = joints + transl
        if vertices is not None:
            vertices = vertices + transl
    return BodyOutput(vertices=vertices, joints=joints)
