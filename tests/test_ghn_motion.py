"""Motion mapping 𝒯 (neuhmr_jax.ghn.motion): bone transforms against smpl_jax.forward, the warps
against the rest mesh and against each other, trilinear sampling against scipy / a direct formula /
PyTorch's grid_sample, pose and point gradients, and the skinning-weight priors and decoder."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

import smpl_jax
from neuhmr_jax.ghn import motion as M

NJ = 24


@pytest.fixture(scope="module")
def body():
    return smpl_jax.load("default-small")


@pytest.fixture(scope="module")
def fns():
    """Jitted, frame-vmapped versions: each compiles once per input shape for the module."""
    return dict(
        bones=jax.jit(jax.vmap(M.bone_transforms, (None, 0, None, 0))),
        backward=jax.jit(jax.vmap(M.backward_warp, (None, None, 0, 0))),
        forward=jax.jit(jax.vmap(M.forward_warp, (None, None, 0, 0))),
        smpl=jax.jit(smpl_jax.forward),
    )


def moderate_poses(rng, frames):
    """Axis-angle components ~ N(0, 0.15) rad (joint angles ~15 deg), any root orientation."""
    pose = rng.normal(0.0, 0.15, (frames, NJ, 3))
    pose[:, 0] = rng.normal(0.0, 1.0, (frames, 3))
    return jnp.asarray(pose, jnp.float32)


@pytest.fixture(scope="module")
def posed(body, fns):
    """Three frames of one subject: bases, posed vertices, rest vertices, and the subject's
    resolution-32 body-weight prior with its box."""
    rng = np.random.default_rng(7)
    betas = jnp.asarray(rng.normal(0.0, 1.0, 10), jnp.float32)
    pose = moderate_poses(rng, 3)
    transl = jnp.asarray(rng.normal(0.0, 0.5, (3, 3)), jnp.float32)
    G = fns["bones"](body, pose, betas, transl)
    verts = fns["smpl"](body, pose, betas[None], transl).vertices
    rest = np.asarray(body.v_template) + np.asarray(body.shapedirs) @ np.asarray(betas)
    return dict(betas=betas, pose=pose, transl=transl, G=G, M=M.observation_to_canonical(G),
                verts=verts, rest=rest, box=M.canonical_box(body, betas),
                prior=jnp.asarray(M.body_weight_prior(body, betas, resolution=32)))


# ---------------------------------------------------------------------------------------------
# 1. bone transforms


def test_bone_transforms_reproduce_smpl_forward(body, fns, posed):
    """Σ_i w_ij (R_i v_rest_j + t_i) == smpl_jax.forward(...).vertices (the default bodies have
    no pose correctives), for axis-angle and matrix poses; G_i moves rest joint i onto posed
    joint i; M_i = G_i^{-1}."""
    out = fns["smpl"](body, posed["pose"], posed["betas"][None], posed["transl"])
    W = np.asarray(body.weights, np.float64)
    for G in (posed["G"], fns["bones"](body, smpl_jax.rotations.axis_angle_to_matrix(
            posed["pose"]), posed["betas"], posed["transl"])):
        R, t = np.asarray(G.R, np.float64), np.asarray(G.t, np.float64)
        lbs = np.einsum("vj,fjab,vb->fva", W, R, posed["rest"]) + np.einsum("vj,fja->fva", W, t)
        np.testing.assert_allclose(lbs, out.vertices, atol=1e-5)
        rest_j = np.asarray(M.canonical_joints(body, posed["betas"]), np.float64)
        np.testing.assert_allclose(np.einsum("fjab,jb->fja", R, rest_j) + t, out.joints,
                                   atol=1e-5)
    zero = fns["smpl"](body, jnp.zeros((3, NJ, 3)), posed["betas"][None], jnp.zeros((3, 3)))
    np.testing.assert_allclose(M.canonical_joints(body, posed["betas"]), zero.joints[0], atol=1e-6)
    Mb = posed["M"]
    eye = np.einsum("fjab,fjbc->fjac", Mb.R, posed["G"].R)
    np.testing.assert_allclose(eye, np.broadcast_to(np.eye(3), eye.shape), atol=1e-5)
    np.testing.assert_allclose(np.einsum("fjab,fjb->fja", Mb.R, posed["G"].t) + Mb.t, 0.0,
                               atol=1e-5)
    # Shorter betas mean zeros for the missing coefficients.
    np.testing.assert_allclose(M.canonical_joints(body, posed["betas"][:4]), M.canonical_joints(
        body, jnp.zeros(10).at[:4].set(posed["betas"][:4])), atol=1e-6)
    with pytest.raises(ValueError, match="one frame"):
        M.bone_transforms(body, posed["pose"], posed["betas"])


# ---------------------------------------------------------------------------------------------
# 2. identity at zero pose


def test_zero_pose_backward_warp_is_identity(body, fns, posed):
    """Zero pose, no translation: M_i = identity, so x_c = x wherever a bone has weight; fg = 1
    on the rest surface, ~1 within a centimetre of it, exactly 0 beyond one voxel outside the
    box. (The subject's rest pose and prior of the `posed` fixture; three "frames" of points,
    which keeps the shapes, and the compiled warp, of the posed tests.)"""
    betas, prior, box, rest = posed["betas"], posed["prior"], posed["box"], posed["rest"]
    bases = M.observation_to_canonical(fns["bones"](body, jnp.zeros((3, NJ, 3)), betas,
                                                    jnp.zeros((3, 3))))
    np.testing.assert_allclose(bases.R, np.broadcast_to(np.eye(3), (3, NJ, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(bases.t, 0.0, atol=1e-6)
    rng = np.random.default_rng(1)
    n = len(rest)
    near = rest + rng.normal(size=rest.shape) * 0.01 / np.sqrt(3)  # ~1 cm off the surface
    lo, hi = np.asarray(box.lo), np.asarray(box.hi)
    in_box = rng.uniform(lo, hi, size=(n - 100, 3))
    far = rng.uniform(-0.5, 0.5, size=(100, 3)) + np.where(rng.random((100, 3)) < 0.5,
                                                           lo - 0.4, hi + 0.4)
    x = jnp.asarray(np.stack([rest, near, np.concatenate([in_box, far])]), jnp.float32)
    x_c, fg = fns["backward"](prior, box, bases, x)
    x_c, fg = np.asarray(x_c), np.asarray(fg)
    assert fg[0].min() > 0.999, fg[0].min()
    assert fg[1].min() > 0.95, fg[1].min()
    np.testing.assert_array_equal(fg[2, -100:], 0.0)
    np.testing.assert_array_equal(x_c[2, -100:], 0.0)
    has = fg > 1e-3
    assert has[2].sum() > 200 and (~has[2, :-100]).sum() > 200  # the box has body and void
    np.testing.assert_allclose(x_c[has], np.asarray(x)[has], atol=2e-5)
    # The per-bone sampling inside backward_warp agrees with trilinear() on the bone channels.
    whole = jax.jit(M.trilinear)(prior, M.normalise(x, box))
    np.testing.assert_allclose(fg, np.asarray(whole)[..., :NJ].sum(-1), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 3. backward then forward (same frame)


def test_backward_forward_round_trip_single_bone_volume_is_exact(body, fns, posed):
    """A volume whose bone-k channel is 1 everywhere: x_c = M_k x and x_k = G_k x_c = x, up to
    the forward warp's 1e-4 root weight (1e-4 x |G_0 x_c - G_k x_c| < 0.3 mm in the box)."""
    k = 18
    vol = jnp.zeros(posed["prior"].shape).at[k].set(1.0)  # the prior's shapes: no new compile
    rng = np.random.default_rng(2)
    box = posed["box"]
    c = rng.uniform(np.asarray(box.lo) + 0.05, np.asarray(box.hi) - 0.05,
                    size=posed["verts"].shape)
    G = posed["G"]
    x = jnp.einsum("fab,fnb->fna", G.R[:, k], c) + G.t[:, None, k]
    x_c, fg = fns["backward"](vol, box, posed["M"], x)
    np.testing.assert_allclose(fg, 1.0, atol=1e-5)
    np.testing.assert_allclose(x_c, c, atol=2e-5)
    np.testing.assert_allclose(fns["forward"](vol, box, posed["M"], x_c), x, atol=3e-4)


def test_backward_forward_round_trip_near_surface(body, fns, posed):
    """posed frame -> canonical -> the same frame with the resolution-32 body-weight prior.

    Tolerance: backward weights are read at each bone's warped point M_i x, forward weights at
    the blended x_c; both equal the mesh weights only up to trilinear smoothing over a voxel
    (~7 cm here), and their difference is multiplied by the spread |G_i x_c - G_j x_c| of the
    bone maps (mm to a few cm for 15 deg joints). So most points come back within a millimetre
    or two, and the tail is where neighbouring bones (or self-contact) disagree. Measured on
    21 subjects x 3 poses: median 0.4-0.7 mm, 75th percentile 1.2-2.9 mm, 90th 3-19 mm.
    """
    rng = np.random.default_rng(3)
    verts = np.asarray(posed["verts"])
    x = jnp.asarray(verts + rng.normal(size=verts.shape) * 0.005 / np.sqrt(3), jnp.float32)
    # (posed vertices ~5 mm off the surface)
    x_c, fg = fns["backward"](posed["prior"], posed["box"], posed["M"], x)
    back = fns["forward"](posed["prior"], posed["box"], posed["M"], x_c)
    err = np.linalg.norm(np.asarray(back) - np.asarray(x), axis=-1)
    print(f"round trip (mm): median {np.median(err) * 1e3:.2f} mean {err.mean() * 1e3:.2f} "
          f"p90 {np.percentile(err, 90) * 1e3:.1f} max {err.max() * 1e3:.1f}")
    assert np.median(err) < 2e-3
    assert np.percentile(err, 75) < 5e-3
    assert np.asarray(fg).min() > 0.1


# ---------------------------------------------------------------------------------------------
# 4. posed surface -> rest surface


def test_posed_vertices_map_to_rest_vertices(body, fns, posed):
    """backward_warp of posed vertices ≈ rest vertices (v_template + shapedirs β).

    Exact for a vertex skinned to one bone whose neighbours' warped points read no weight; the
    error comes from the resolution-32 volume smoothing weights over ~7 cm and from other bones'
    warped points landing on the body (HumanNeRF's inherent ambiguity, largest where limbs come
    close: a foot warped by the other leg's bone lands on the other foot). Measured on 21
    subjects x 3 poses of this family: median 0.8-1.3 mm; dominant-weight vertices median
    0.3-0.6 mm, 84-97% of them within 5 mm; 89-100% of all vertices within 2 cm; the maximum
    ranges 1-29 cm (near-contacts). The thresholds keep a margin over the worst subject.
    """
    x_c, fg = fns["backward"](posed["prior"], posed["box"], posed["M"], posed["verts"])
    err = np.linalg.norm(np.asarray(x_c) - posed["rest"], axis=-1)
    dom = np.asarray(body.weights).max(axis=1) > 0.95
    ed = err[:, dom]
    print(f"posed -> rest (mm): median {np.median(err) * 1e3:.2f} mean {err.mean() * 1e3:.2f} "
          f"max {err.max() * 1e3:.1f}; dominant (w > 0.95, {dom.sum()} vertices): median "
          f"{np.median(ed) * 1e3:.2f} max {ed.max() * 1e3:.1f} within 5 mm "
          f"{(ed < 5e-3).mean():.0%}")
    assert np.median(err) < 3e-3
    assert np.median(ed) < 1.5e-3
    assert (ed < 5e-3).mean() > 0.75
    assert np.mean(err < 0.02) > 0.85


# ---------------------------------------------------------------------------------------------
# 5. trilinear sampling


def _trilinear_reference(volume, points):
    """Direct formula, one point at a time: grid_sample(align_corners=True, padding zeros)."""
    c, d, h, w = volume.shape
    out = np.zeros((len(points), c))
    for n, (px, py, pz) in enumerate(points):
        fx, fy, fz = (px + 1) / 2 * (w - 1), (py + 1) / 2 * (h - 1), (pz + 1) / 2 * (d - 1)
        x0, y0, z0 = int(np.floor(fx)), int(np.floor(fy)), int(np.floor(fz))
        for ix, iy, iz in itertools.product((x0, x0 + 1), (y0, y0 + 1), (z0, z0 + 1)):
            if 0 <= ix < w and 0 <= iy < h and 0 <= iz < d:
                wt = (1 - abs(fx - ix)) * (1 - abs(fy - iy)) * (1 - abs(fz - iz))
                out[n] += wt * volume[:, iz, iy, ix]
    return out


@pytest.fixture(scope="module")
def small_volume():
    rng = np.random.default_rng(5)
    vol = rng.normal(size=(3, 5, 6, 7))  # distinct D, H, W to catch axis mix-ups
    pts = rng.uniform(-1.25, 1.25, size=(400, 3))
    return vol, pts


def test_trilinear_matches_references(small_volume):
    vol, pts = small_volume
    got = np.asarray(jax.jit(M.trilinear)(jnp.asarray(vol, jnp.float32),
                                          jnp.asarray(pts, jnp.float32)))
    assert got.shape == (len(pts), 3)
    np.testing.assert_allclose(got, _trilinear_reference(vol, pts), atol=2e-5)
    # scipy in index space (z, y, x); 'grid-constant' interpolates against zeros beyond the edge.
    size = np.array(vol.shape[:0:-1])  # (W, H, D)
    idx = ((pts + 1) / 2 * (size - 1))[:, ::-1].T
    ref = np.stack([scipy.ndimage.map_coordinates(v, idx, order=1, mode="grid-constant", cval=0)
                    for v in vol], axis=-1)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    outside = np.abs(pts).max(axis=1) > 1  # the zero-padding band is exercised
    assert outside.sum() > 50 and np.abs(ref[outside]).max() > 0
    # Voxel centres read the stored values exactly; leading point dims (W, H, D) are kept.
    centres = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in size), indexing="ij"), -1)
    exact = jax.jit(M.trilinear)(jnp.asarray(vol, jnp.float32), jnp.asarray(centres, jnp.float32))
    np.testing.assert_allclose(exact, np.transpose(vol, (3, 2, 1, 0)), atol=1e-6)


def test_trilinear_matches_torch_grid_sample(small_volume):
    torch = pytest.importorskip("torch")
    vol, pts = small_volume
    ref = torch.nn.functional.grid_sample(
        torch.tensor(vol[None]), torch.tensor(pts[None, None, None]), mode="bilinear",
        padding_mode="zeros", align_corners=True)[0, :, 0, 0].T.numpy()
    got = jax.jit(M.trilinear)(jnp.asarray(vol, jnp.float32), jnp.asarray(pts, jnp.float32))
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_trilinear_gradient_matches_finite_differences(small_volume):
    vol, pts = small_volume
    pts = pts[np.abs(pts).max(axis=1) < 1.1][:50]  # inside and in the zero-padding band
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        v, p = jnp.asarray(vol), jnp.asarray(pts)
        wts = jnp.asarray(rng.normal(size=(len(pts), 3)))
        # Per-point values (each depends on its own point only), so one call gives every
        # point's difference quotient along an axis.
        per_point = jax.jit(lambda p, v: jnp.sum(M.trilinear(v, p) * wts, axis=-1))
        gp, gv = jax.jit(jax.grad(lambda p, v: jnp.sum(per_point(p, v)), argnums=(0, 1)))(p, v)
        h = 1e-7
        for a in range(3):
            e = jnp.zeros_like(p).at[:, a].set(h)
            fd = (per_point(p + e, v) - per_point(p - e, v)) / (2 * h)
            np.testing.assert_allclose(gp[:, a], fd, rtol=1e-5, atol=1e-6)
        dv = jnp.asarray(rng.normal(size=vol.shape))
        fd = (per_point(p, v + h * dv) - per_point(p, v - h * dv)).sum() / (2 * h)
        np.testing.assert_allclose(jnp.sum(gv * dv), fd, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# 6. gradients through 𝒯


def test_backward_warp_pose_gradient_matches_finite_differences(body, posed):
    """float64 (the warp is piecewise smooth with kinks at voxel faces; h = 1e-7 makes crossing
    one unlikely and float64 keeps the difference quotient at ~1e-9 relative)."""
    rng = np.random.default_rng(8)
    with jax.enable_x64(True):
        b64 = body.astype(jnp.float64)
        vol = jnp.asarray(posed["prior"], jnp.float64)
        box = M.Box(*(jnp.asarray(a, jnp.float64) for a in posed["box"]))
        betas = jnp.asarray(posed["betas"], jnp.float64)
        x = jnp.asarray(posed["verts"][0, ::12], jnp.float64)
        cw = jnp.asarray(rng.normal(size=x.shape))

        def loss(pose):
            bases = M.observation_to_canonical(M.bone_transforms(b64, pose, betas))
            x_c, fg = M.backward_warp(vol, box, bases, x)
            return jnp.sum(jnp.sin(3.0 * x_c) * cw) + jnp.sum(fg)

        value_and_grad = jax.jit(jax.value_and_grad(loss))  # one compile for both
        pose = jnp.asarray(posed["pose"][0], jnp.float64)
        _, g = value_and_grad(pose)
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-3
        h = 1e-7
        for _ in range(3):
            d = jnp.asarray(rng.normal(size=pose.shape))
            fd = (value_and_grad(pose + h * d)[0] - value_and_grad(pose - h * d)[0]) / (2 * h)
            np.testing.assert_allclose(jnp.sum(g * d), fd, rtol=1e-5)


def test_gradients_are_finite_float32(body, posed):
    """At zero pose (axis-angle at 0), and for points where the warp has no weight (x_c = 0),
    outside the box and on voxel corners."""
    vol, box = posed["prior"], posed["box"]
    x = jnp.concatenate([posed["verts"][0, ::40], jnp.asarray(
        [[5.0, 5.0, 5.0], [0.0, 0.0, 0.0], [-3.0, 0.2, 0.1]]), box.lo[None], box.hi[None]])

    def loss(pose, x):
        bases = M.observation_to_canonical(M.bone_transforms(body, pose, posed["betas"]))
        x_c, fg = M.backward_warp(vol, box, bases, x)
        x_k = M.forward_warp(vol, box, bases, x_c)
        return jnp.sum(x_c**2) + jnp.sum(fg) + jnp.sum(x_k**2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    for pose in (jnp.zeros((NJ, 3)), posed["pose"][0]):
        gp, gx = grad(pose, x)
        assert np.all(np.isfinite(gp)) and np.all(np.isfinite(gx))
        assert np.abs(gp).max() > 0


# ---------------------------------------------------------------------------------------------
# 7. priors and the learned volume


def test_gaussian_bone_prior(body):
    r = 32
    prior = M.gaussian_bone_prior(body, None, resolution=r)
    assert prior.shape == (NJ + 1, r, r, r) and prior.dtype == np.float32
    np.testing.assert_allclose(prior.sum(axis=0), 1.0, atol=1e-5)
    assert prior.min() >= 0
    box = M.canonical_box(body)
    joints = np.asarray(M.canonical_joints(body, jnp.zeros(10)))
    names = smpl_jax.joint_sets.SMPL_JOINT_NAMES
    mid = lambda a, b: 0.5 * (joints[names.index(a)] + joints[names.index(b)])
    checks = {"left_hip": mid("left_hip", "left_knee"),
              "right_knee": mid("right_knee", "right_ankle"),
              "left_shoulder": mid("left_shoulder", "left_elbow"),
              "right_elbow": mid("right_elbow", "right_wrist"), "head": joints[names.index("head")],
              "spine2": mid("spine2", "spine3")}
    pts = jnp.asarray(np.stack(list(checks.values()) + [box.lo + 0.02]), jnp.float32)
    sampled = np.asarray(jax.jit(M.trilinear)(jnp.asarray(prior), M.normalise(pts, box)))
    for (name, _), s in zip(checks.items(), sampled):
        assert s.argmax() == names.index(name), (name, s.argmax())
    assert sampled[-1].argmax() == NJ and sampled[-1, NJ] > 0.99  # a corner: background
    # Where only the left forearm's Gaussian (elbow 18 -> wrist 20) matters and Σ < 1 (no
    # renormalisation), the channel is HumanNeRF's exp(-(a / 0.12)^2 - (r / 0.06)^2).
    grid = M._grid_points(box, r)
    d = grid - 0.5 * (joints[18] + joints[20])
    axis = (joints[20] - joints[18]) / np.linalg.norm(joints[20] - joints[18])
    a = d @ axis
    g = np.exp(-(a / 0.12) ** 2 - (np.sum(d * d, -1) - a**2) / 0.06**2)
    sel = (prior[NJ] > 1e-3) & (g > 0.05)  # Σ < 1: the channels are not renormalised there
    assert sel.sum() > 10
    np.testing.assert_allclose(prior[18][sel], g[sel], atol=2e-5)


def _winding_number(points, tri):
    """Generalised winding number of a closed triangle mesh (Van Oosterom-Strackee solid
    angles): ~1 inside, ~0 outside."""
    a, b, c = (tri[None, :, k] - points[:, None] for k in range(3))
    la, lb, lc = (np.linalg.norm(v, axis=-1) for v in (a, b, c))
    num = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
    den = (la * lb * lc + np.einsum("pfi,pfi->pf", a, b) * lc
           + np.einsum("pfi,pfi->pf", b, c) * la + np.einsum("pfi,pfi->pf", c, a) * lb)
    return np.arctan2(num, den).sum(axis=1) / (2 * np.pi)


def test_body_weight_prior(body):
    prior = M.body_weight_prior(body, None, resolution=16)
    assert prior.shape == (NJ + 1, 16, 16, 16) and prior.dtype == np.float32
    np.testing.assert_allclose(prior.sum(axis=0), 1.0, atol=1e-5)
    # At a vertex skinned (almost) only to one bone, that bone dominates the volume's read.
    W = np.asarray(body.weights)
    box = M.canonical_box(body)
    verts = np.asarray(body.v_template)
    ids = np.flatnonzero(W.max(1) > 0.999)
    idx = (np.asarray(M.normalise(jnp.asarray(verts[ids]), box)) + 1) / 2 * 15  # voxel units
    read = np.stack([scipy.ndimage.map_coordinates(c, idx[:, ::-1].T, order=1) for c in prior], 1)
    agree = read[:, :NJ].argmax(1) == W[ids].argmax(1)
    assert agree.mean() > 0.85, agree.mean()
    np.testing.assert_allclose(read.sum(1), 1.0, atol=1e-5)
    assert read[:, NJ].max() < 1e-3  # the surface is foreground

    # Inside vs outside against an independent winding-number test, at a resolution and falloff
    # where a wrong inside test would show: with a 5 cm shell and a 5 mm falloff, interior
    # voxels deeper than the shell would be background if they were classified as outside.
    r = 64
    fine = M.body_weight_prior(body, None, resolution=r, falloff=0.005)
    grid = M._grid_points(box, r).reshape(-1, 3)
    bg = fine[NJ].reshape(-1)
    from scipy.spatial import cKDTree
    tri = verts[np.asarray(body.faces)]
    rng = np.random.default_rng(10)
    u = rng.random((len(tri), 100, 2))
    u[u.sum(-1) > 1] = 1 - u[u.sum(-1) > 1]
    surf = tri[:, None, 0] + u[..., :1] * (tri[:, None, 1] - tri[:, None, 0]) + u[..., 1:] * (
        tri[:, None, 2] - tri[:, None, 0])  # ~1 cm apart: distances over-estimated by < 1 cm
    trunk = np.asarray(M.canonical_joints(body, jnp.zeros(10)))[[0, 1, 2, 3, 6, 9]]
    cand = np.concatenate([np.flatnonzero(cKDTree(trunk).query(grid)[0] < 0.12),
                           rng.choice(len(grid), 400, replace=False)])
    dist = cKDTree(surf.reshape(-1, 3), balanced_tree=False).query(grid[cand])[0]
    shell = np.linalg.norm((np.asarray(box.hi) - np.asarray(box.lo)) / (r - 1))
    pick = cand[dist > shell + 0.02]  # deeper than the shell: only the inside test gives fg = 1
    inside = _winding_number(grid[pick], tri) > 0.5
    assert inside.sum() > 20 and (~inside).sum() > 150, (inside.sum(), len(pick))
    np.testing.assert_array_less(bg[pick][inside], 1e-6)
    assert bg[pick][~inside].min() > 0.9
    # Interior weights come from the surface: mostly the bone of the nearest vertex.
    nearest = W[cKDTree(verts).query(grid[pick][inside])[1]].argmax(1)
    got = fine[:NJ].reshape(NJ, -1)[:, pick][:, inside].argmax(0)
    assert (got == nearest).mean() > 0.7, (got == nearest).mean()


def test_skinning_volume_shapes_and_init(body):
    # Layer shapes of the default (HumanNeRF-sized) decoder, without computing it.
    model = M.SkinningVolume()
    log_prior = jax.ShapeDtypeStruct((25, 32, 32, 32), jnp.float32)
    out, state = jax.eval_shape(
        lambda lp: model.init_with_output(jax.random.key(0), lp, capture_intermediates=True),
        log_prior)
    assert out.shape == (25, 32, 32, 32)
    inter = state["intermediates"]
    sizes = [inter[f"deconv{k}"]["__call__"][0].shape for k in range(4)]
    sizes.append(inter["deconv_out"]["__call__"][0].shape)
    assert sizes == [(1, 2, 2, 2, 512), (1, 4, 4, 4, 512), (1, 8, 8, 8, 256),
                     (1, 16, 16, 16, 256), (1, 32, 32, 32, 25)]
    p16 = jax.eval_shape(lambda: M.SkinningVolume(resolution=16).init(
        jax.random.key(0), jnp.zeros((25, 16, 16, 16))))["params"]
    assert sorted(p16) == ["deconv0", "deconv1", "deconv2", "deconv_out", "embedding", "mlp"]
    assert p16["deconv_out"]["kernel"].shape == (4, 4, 4, 256, 25)
    with pytest.raises(ValueError, match="power of 2"):
        M.SkinningVolume(resolution=24).init(jax.random.key(0), jnp.zeros((25, 24, 24, 24)))

    # A small decoder computed for real: a softmax over channels, ≈ the prior at init.
    prior = jnp.asarray(M.gaussian_bone_prior(body, None, resolution=16))
    small = M.SkinningVolume(resolution=16, widths=(32, 32, 16))
    # rbg keys: threefry's random-bits programs take seconds each to compile on XLA:CPU.
    w, variables = jax.jit(small.init_with_output)(jax.random.key(1, impl="rbg"), jnp.log(prior))
    apply = small.apply
    assert w.shape == (25, 16, 16, 16)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-5)
    assert np.all(np.isfinite(w))
    diff = float(jnp.abs(w - prior).max())
    assert diff < 0.02, diff
    kernel = variables["params"]["deconv1"]["kernel"]  # HumanNeRF's block-wise init
    np.testing.assert_array_equal(kernel[1::2], kernel[0::2])
    np.testing.assert_array_equal(kernel[:, :, 1::2], kernel[:, :, 0::2])
    # Gradients reach the code and the last layer, finite despite log(0) = -inf in the prior.
    target = jnp.asarray(np.random.default_rng(9).random(w.shape), jnp.float32)
    grads = jax.jit(jax.grad(lambda v: jnp.sum(apply(v, jnp.log(prior)) * target)))(variables)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert float(jnp.abs(grads["params"]["deconv_out"]["kernel"]).max()) > 0
    assert float(jnp.abs(grads["params"]["embedding"]).max()) > 0


# ---------------------------------------------------------------------------------------------
# 8. sharp occupancy from the rest surface


@pytest.fixture(scope="module")
def surface(body):
    return {k: jnp.asarray(v) for k, v in
            M.rest_surface_fields(body, resolution=48, shape_resolution=32).items()}


def test_subject_sdf_against_winding_number_and_distance(body, surface):
    """The subject's signed distance (mean-body SDF moved by the shape directions) against the
    subject's own mesh: the sign by winding numbers, the magnitude by dense surface samples."""
    rng = np.random.default_rng(3)
    betas = rng.normal(0.0, 1.0, 10).astype(np.float32)
    box = M.canonical_box(body)
    np.testing.assert_allclose(M.subject_sdf(surface, box, jnp.zeros(10)), surface["sdf"],
                               atol=1e-6)  # β = 0 reads the voxel centres themselves
    sdf = np.asarray(jax.jit(M.subject_sdf)(surface, box, betas)).reshape(-1)
    verts = np.asarray(body.v_template) + np.asarray(body.shapedirs) @ betas
    tri = verts[np.asarray(body.faces)]
    u = rng.random((len(tri), 60, 2))
    u[u.sum(-1) > 1] = 1 - u[u.sum(-1) > 1]
    surf = (tri[:, None, 0] + u[..., :1] * (tri[:, None, 1] - tri[:, None, 0])
            + u[..., 1:] * (tri[:, None, 2] - tri[:, None, 0])).reshape(-1, 3)
    from scipy.spatial import cKDTree
    grid = M._grid_points(box, 48).reshape(-1, 3)
    near = np.flatnonzero(np.abs(sdf) < 0.06)
    pick = rng.choice(near, 600, replace=False)
    dist = cKDTree(np.concatenate([surf, verts]), balanced_tree=False).query(grid[pick])[0]
    err = np.abs(np.abs(sdf[pick]) - dist)
    err0 = np.abs(np.abs(np.asarray(surface["sdf"]).reshape(-1)[pick]) - dist)
    print(f"|sdf| error (mm): median {np.median(err) * 1e3:.1f}, 90% {np.quantile(err, 0.9) * 1e3:.1f}; "
          f"uncorrected mean body {np.median(err0) * 1e3:.1f}, {np.quantile(err0, 0.9) * 1e3:.1f}")
    assert np.median(err) < 3e-3 and np.quantile(err, 0.9) < 0.01
    clear = pick[dist > 0.01]  # the sign where the surface is more than 1 cm away
    inside = _winding_number(grid[clear], tri) > 0.5
    assert inside.sum() > 50 and (~inside).sum() > 50
    assert np.mean((sdf[clear] < 0) == inside) > 0.97
    # Without the shape correction the mean body's distances are off by centimetres.
    assert np.median(err0) > 5 * np.median(err)


def test_surface_occupancy_is_sharp_at_the_posed_surface(body, fns, posed, surface):
    """backward_warp with the subject's SDF: fg ≈ 1/2 on the posed surface, > 1/2 two
    centimetres inside it (sigmoid(2) = 0.88 where the surface is flat), ~0 three centimetres
    outside; posed vertices still map to their rest positions."""
    box = M.canonical_box(body)  # the fields' box (mean shape), as the GHN uses it
    sdf = M.subject_sdf(surface, box, posed["betas"])
    prior = jnp.asarray(M.body_weight_prior(body, None, resolution=32))
    bones = M.bone_weights(prior)
    warp = jax.jit(jax.vmap(lambda b, x: M.backward_warp(bones, box, b, x, sdf=sdf,
                                                         softness=0.01)))
    verts = np.asarray(posed["verts"])
    faces = np.asarray(body.faces)
    normals = np.zeros_like(verts)
    for f in range(len(verts)):
        tri = verts[f][faces]
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        for k in range(3):
            np.add.at(normals[f], faces[:, k], fn)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    x_c, fg = warp(posed["M"], jnp.asarray(verts))
    _, fg_in = warp(posed["M"], jnp.asarray(verts - 0.02 * normals))
    _, fg_out = warp(posed["M"], jnp.asarray(verts + 0.03 * normals))
    fg, fg_in, fg_out = (np.asarray(a) for a in (fg, fg_in, fg_out))
    print(f"fg median on / 2 cm in / 3 cm out: {np.median(fg):.2f} {np.median(fg_in):.2f} "
          f"{np.median(fg_out):.3f}; in > 0.5: {np.mean(fg_in > 0.5):.0%}, out < 0.5: "
          f"{np.mean(fg_out < 0.5):.0%}")
    assert 0.3 < np.median(fg) < 0.7
    # 2 cm inside: everywhere the body is thicker than 4 cm (trunk and thighs: vertices of the
    # pelvis, hips and spine bones); hands and feet are thinner than that.
    thick = fg_in[:, np.isin(np.asarray(body.weights).argmax(1), [0, 1, 2, 3, 6, 9])]
    assert np.median(thick) > 0.75 and np.mean(thick > 0.5) > 0.95
    assert np.median(fg_out) < 0.05 and np.mean(fg_out < 0.5) > 0.9
    err = np.linalg.norm(np.asarray(x_c) - posed["rest"], axis=-1)
    assert np.median(err) < 5e-3
