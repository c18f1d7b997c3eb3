"""Hard rasterizer against a float64 ray-casting oracle on posed default bodies at realistic
distances (camera frame: x right, y down, z forward; pixel centres at +0.5).

Small faces seen from ~3 m are where float32 rasterization loses precision (depth from the
homogeneous E_i ratios was off by centimetres and the z-buffer kept hidden faces), so these tests
cast every pixel's ray against every face in float64 and ask for the same visible face, depth and
barycentrics wherever the float64 answer itself is not decided by a hair.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import smpl_jax
from imphmr_jax.render import rasterize as R

U32 = 2.0**-24  # float32 unit roundoff
EDGE_TOL = 1e-4  # barycentric distance from an edge below which a pixel's owner is ambiguous
DEPTH_TOL = 1e-4  # metres between two hits below which the visible one is ambiguous
BARY_TOL = 1e-4  # barycentric accuracy asked for where the hit is well conditioned


def posed_body(name: str, distance: float):
    """(V, 3) float32 camera-space vertices and (F, 3) faces of a body with bent joints: both
    forearms cross in front of the torso and one knee is raised, so faces hide faces."""
    model = smpl_jax.load(name)
    pose = np.zeros((1, 24, 3), np.float32)
    pose[0, 0] = [np.pi, 0.25, 0.0]  # y up -> the camera's y down, turned a little
    pose[0, 1] = [-1.2, 0.0, 0.1]  # left hip flexed
    pose[0, 4] = [1.5, 0.0, 0.0]  # left knee
    pose[0, 3] = [0.2, 0.0, 0.0]  # spine
    pose[0, 16] = [0.0, -1.2, 0.0]  # upper arms forward
    pose[0, 17] = [0.0, 1.0, 0.0]
    pose[0, 18] = [0.0, -1.5, 0.0]  # forearms across the chest
    pose[0, 19] = [0.0, 1.7, 0.0]
    verts = np.asarray(smpl_jax.forward(model, jnp.asarray(pose), jnp.zeros((1, 10))).vertices[0],
                       np.float64)
    verts = verts - verts.mean(0) + [0.05, 0.0, distance]
    return verts.astype(np.float32), np.asarray(model.faces)


class Oracle(NamedTuple):
    """Nearest hit per pixel, (H, W) arrays: mask, depth, face (-1: none), bary (H, W, 3),
    hits (number of faces the ray meets), ambiguous (see `cast_rays`), kappa (see `cast_rays`)."""

    mask: np.ndarray
    depth: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    hits: np.ndarray
    ambiguous: np.ndarray
    kappa: np.ndarray


def cast_rays(verts, faces, intr, h: int, w: int, near: float) -> Oracle:
    """Float64 ray casting of every pixel centre against every face whose bbox could hold it.

    A pixel is `ambiguous` when its centre lies within EDGE_TOL (barycentric) of an edge of a face
    that it meets no farther than the nearest hit + DEPTH_TOL, or when a second face is hit within
    DEPTH_TOL of the nearest: there float32 rounding of the inputs alone may decide the owner.
    `kappa` bounds how far rounding the pixel's ray to float32 moves the nearest hit's
    barycentrics: a relative change u of r moves the hit by z·|r|·u/|cos θ| along the face
    (θ: ray to normal), and a barycentric is a distance over an altitude h, so z·|r|·u/(|cos θ|·h).
    """
    tri = np.asarray(verts, np.float64)[np.asarray(faces)]  # (F, 3, 3)
    assert np.all(tri[..., 2] > near), "the bbox below assumes every vertex in front"
    fx, fy, cx, cy = np.asarray(intr, np.float64)
    u = fx * tri[..., 0] / tri[..., 2] + cx
    v = fy * tri[..., 1] / tri[..., 2] + cy
    j0 = np.clip(np.floor(u.min(1) - 1), 0, w).astype(int)
    j1 = np.clip(np.ceil(u.max(1)), 0, w).astype(int)
    i0 = np.clip(np.floor(v.min(1) - 1), 0, h).astype(int)
    i1 = np.clip(np.ceil(v.max(1)), 0, h).astype(int)
    nj, ni = np.maximum(j1 - j0, 0), np.maximum(i1 - i0, 0)
    # One (pixel, face) pair per pixel of each face's bbox, all at once.
    count = ni * nj
    f = np.repeat(np.arange(len(tri)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    row, col = i0[f] + k // nj[f], j0[f] + k % nj[f]
    r = np.stack([(col + 0.5 - cx) / fx, (row + 0.5 - cy) / fy, np.ones(len(f))], -1)
    v0, e1, e2 = tri[f, 0], tri[f, 1] - tri[f, 0], tri[f, 2] - tri[f, 0]
    n = np.cross(e1, e2)
    nr = np.sum(n * r, -1)
    nr = np.where(nr == 0, np.nan, nr)
    t = np.sum(n * v0, -1) / nr
    q = t[:, None] * r - v0  # hit - v0 = b1·e1 + b2·e2
    nn = np.sum(n * n, -1)
    b1 = np.sum(np.cross(q, e2) * n, -1) / nn
    b2 = np.sum(np.cross(e1, q) * n, -1) / nn
    bary = np.stack([1 - b1 - b2, b1, b2], -1)
    margin = bary.min(-1)
    hit = (margin >= 0) & (t >= near)

    pix = row * w + col
    order = np.lexsort((t[hit], pix[hit]))  # by pixel, then depth
    hp, ht, hf, hb = pix[hit][order], t[hit][order], f[hit][order], bary[hit][order]
    first = np.r_[True, hp[1:] != hp[:-1]]
    n_pix = h * w
    mask, depth = np.zeros(n_pix, bool), np.full(n_pix, np.inf)
    face, bar = np.full(n_pix, -1), np.zeros((n_pix, 3))
    at = hp[first]
    mask[at], depth[at], face[at], bar[at] = True, ht[first], hf[first], hb[first]
    hits = np.bincount(hp, minlength=n_pix)
    second = np.r_[False, first[:-1]] & ~first
    ambiguous = np.zeros(n_pix, bool)
    ambiguous[hp[second][ht[second] - depth[hp[second]] < DEPTH_TOL]] = True
    close = (np.abs(margin) < EDGE_TOL) & (t >= near) & (t <= depth[pix] + DEPTH_TOL)
    ambiguous[pix[close]] = True

    # Conditioning of the nearest hit (kappa, see above).
    vv, uu = np.mgrid[:h, :w] + 0.5
    ray = np.stack([(uu - cx) / fx, (vv - cy) / fy, np.ones_like(uu)], -1).reshape(-1, 3)
    tv = tri[np.maximum(face, 0)]
    nv = np.cross(tv[:, 1] - tv[:, 0], tv[:, 2] - tv[:, 0])
    norm_n, norm_r = np.linalg.norm(nv, axis=-1), np.linalg.norm(ray, axis=-1)
    cos = np.abs(np.sum(nv * ray, -1)) / (norm_n * norm_r)
    altitude = norm_n / np.linalg.norm(tv - np.roll(tv, 1, axis=1), axis=-1).max(-1)
    kappa = np.where(mask, depth * norm_r * U32 / np.maximum(cos * altitude, 1e-30), 0.0)
    sh = (h, w)
    return Oracle(mask.reshape(sh), np.where(mask, depth, 0).reshape(sh), face.reshape(sh),
                  bar.reshape(sh + (3,)), hits.reshape(sh), ambiguous.reshape(sh),
                  kappa.reshape(sh))


def compare(frag, oracle: Oracle) -> dict:
    """Worst disagreements of a single-image `Fragments` with the oracle on unambiguous pixels."""
    mask, depth, face, bary = (np.asarray(x[0]) for x in (frag.mask, frag.depth, frag.face_index,
                                                          frag.barycentrics))
    sure = ~oracle.ambiguous
    both = sure & mask & oracle.mask
    same = both & (face == oracle.face)
    rel = np.abs(depth[both] / oracle.depth[both] - 1)
    bary_err = np.abs(bary[same] - oracle.bary[same]).max(-1)
    return dict(
        covered=int(oracle.mask.sum()), unambiguous=int((sure & oracle.mask).sum()),
        coverage_mismatches=int(np.sum(sure & (mask != oracle.mask))),
        face_mismatches=int(np.sum(both & (face != oracle.face))),
        depth_rel_err=float(rel.max()), depth_abs_err=float(np.max(rel * oracle.depth[both])),
        bary_err=float(bary_err.max()),
        bary_excess=float(np.max(bary_err / np.maximum(BARY_TOL, oracle.kappa[same]))))


def check_body(name, distance, h, w, f):
    verts, faces = posed_body(name, distance)
    intr = np.array([f, f, w / 2, h / 2], np.float32)
    oracle = cast_rays(verts, faces, intr, h, w, near=1e-3)
    # The scene is a real test: a body filling much of the image, with hidden layers (a closed
    # mesh is hit at least twice per covered ray; 4+ hits are the forearm and leg over the body).
    assert oracle.mask.sum() > 2000 and np.sum(oracle.hits >= 4) > 100
    assert oracle.ambiguous[oracle.mask].mean() < 0.01
    budget = R.required_tiles(verts[None], faces, intr, h, w)
    frag = R.rasterize(verts[None], faces, intr, h, w, max_tiles=budget)
    assert int(frag.overflow[0]) == 0
    err = compare(frag, oracle)
    assert err["coverage_mismatches"] == 0, err
    assert err["face_mismatches"] == 0, err
    assert err["depth_rel_err"] <= 1e-5, err
    # Barycentrics within BARY_TOL, or within kappa where even rounding the ray to float32 moves
    # them more (grazing or sliver faces).
    assert err["bary_excess"] <= 1.0, err
    return err


def test_default_small_body_at_3_3m_matches_float64_ray_casting():
    check_body("default-small", 3.3, 160, 128, 250.0)


def test_default_body_at_3m_matches_float64_ray_casting():
    check_body("default", 3.0, 224, 224, 336.0)


def test_depth_and_barycentric_gradients_match_finite_differences():
    # One large tilted triangle; the loss reads interior pixels only, so the coverage (piecewise
    # constant) is the same for every perturbed input and only depth and barycentrics move.
    tri = np.array([[-0.9, -0.7, 2.0], [1.0, -0.5, 2.6], [0.1, 0.9, 2.3]], np.float32)
    faces = np.array([[0, 1, 2]])
    intr, h = np.array([20.0, 20.0, 12.0, 12.0], np.float32), 24
    rasterize = lambda v: R.rasterize(v, faces, intr, h, h, max_tiles=64)
    frag = rasterize(tri[None])
    assert int(frag.overflow[0]) == 0
    inner = np.asarray(frag.barycentrics[0]).min(-1) > 0.1
    assert inner.sum() > 40
    w = np.random.default_rng(0).uniform(0.5, 1.5, (h, h, 4)) * inner[..., None]

    @jax.jit
    def losses(v):  # (B, 3, 3) -> (B,)
        fr = rasterize(v)
        return jnp.sum(w * jnp.concatenate([fr.depth[..., None], fr.barycentrics], -1), (1, 2, 3))

    grad = np.asarray(jax.grad(lambda v: losses(v[None])[0])(jnp.asarray(tri))).reshape(-1)
    eps = 1e-3
    steps = eps * np.eye(9, dtype=np.float32).reshape(9, 3, 3)
    fd = np.asarray(losses(tri + steps) - losses(tri - steps)) / (2 * eps)  # one batch
    np.testing.assert_allclose(grad, fd, rtol=2e-2, atol=2e-2 * np.abs(fd).max())
    # Scaling the mesh about the camera changes no pixel's face, scales depth and keeps the
    # barycentrics: d/ds loss(s·tri) at s = 1 (= grad · tri) is the depth term alone.
    depth_term = float(np.sum(w[..., 0] * np.asarray(frag.depth[0])))
    np.testing.assert_allclose(grad @ tri.reshape(-1), depth_term, rtol=1e-4)
