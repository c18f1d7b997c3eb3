"""MPJPE / PA-MPJPE / PVE / similarity Procrustes against independent NumPy/SciPy computations and
exact invariances."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from imphmr_jax import metrics


def _horn_similarity(x, y, w=None):
    """Independent truth: Horn's (1987) unit-quaternion solution of the similarity alignment.

    The best proper rotation is the eigenvector of the largest eigenvalue of Horn's symmetric 4x4
    matrix built from S = Σ w x_c y_cᵀ; scale = Σ w y_c·(R x_c) / Σ w |x_c|² (asymmetric form).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    mx = (w[:, None] * x).sum(0) / w.sum()
    my = (w[:, None] * y).sum(0) / w.sum()
    xc, yc = x - mx, y - my
    s = (w[:, None, None] * xc[:, :, None] * yc[:, None, :]).sum(0)
    sxx, sxy, sxz = s[0]
    syx, syy, syz = s[1]
    szx, szy, szz = s[2]
    n = np.array([
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz]])
    evals, evecs = np.linalg.eigh(n)
    q = evecs[:, np.argmax(evals)]  # (w, x, y, z)
    rot = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()
    scale = (w * np.einsum("ji,ji->j", yc, xc @ rot.T)).sum() / (w * (xc ** 2).sum(1)).sum()
    return scale * xc @ rot.T + my


def _random_similarity(rng, b):
    rots = Rotation.random(b, random_state=rng.integers(1 << 30)).as_matrix()
    scales = rng.uniform(0.5, 2.0, size=b)
    trans = rng.normal(size=(b, 3))
    return rots, scales, trans


def test_mpjpe_and_pve_match_numpy():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(5, 14, 3)).astype(np.float32)
    gt = rng.normal(size=(5, 14, 3)).astype(np.float32)
    want = np.linalg.norm(pred.astype(np.float64) - gt, axis=-1).mean(-1) * 1000
    np.testing.assert_allclose(metrics.mpjpe(pred, gt), want, rtol=1e-5)
    np.testing.assert_allclose(metrics.pve(pred, gt), want, rtol=1e-5)
    # Known analytic case: every joint off by (3, 4, 0) cm -> 50 mm.
    np.testing.assert_allclose(metrics.mpjpe(gt + np.array([0.03, 0.04, 0.0], np.float32), gt),
                               np.full(5, 50.0), rtol=1e-5)


def test_mpjpe_mask_selects_joints():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(3, 10, 3)).astype(np.float32)
    gt = rng.normal(size=(3, 10, 3)).astype(np.float32)
    mask = rng.random((3, 10)) > 0.4
    mask[:, 0] = True
    d = np.linalg.norm(pred - gt, axis=-1)
    want = np.array([d[i][mask[i]].mean() for i in range(3)]) * 1000
    np.testing.assert_allclose(metrics.mpjpe(pred, gt, mask), want, rtol=1e-5)
    # Masked-out joints may hold anything finite: a huge error there changes nothing.
    pred2 = np.where(mask[..., None], pred, 1e3).astype(np.float32)
    np.testing.assert_allclose(metrics.mpjpe(pred2, gt, mask), want, rtol=1e-5)


def test_procrustes_matches_horn_and_orthogonal_procrustes():
    rng = np.random.default_rng(2)
    b, j = 6, 17
    gt = rng.normal(size=(b, j, 3))
    rots, scales, trans = _random_similarity(rng, b)
    # pred = a noisy similarity-transformed copy of gt (a realistic prediction).
    pred = np.einsum("bij,bnj->bni", rots, gt) * scales[:, None, None] + trans[:, None]
    pred += rng.normal(scale=0.3, size=pred.shape)
    aligned = np.asarray(metrics.similarity_procrustes(pred.astype(np.float32),
                                                       gt.astype(np.float32)))
    for i in range(b):
        np.testing.assert_allclose(aligned[i], _horn_similarity(pred[i], gt[i]), atol=2e-5)
        # SciPy: optimal orthogonal R for the centred sets (a rotation here, the data is not
        # mirrored), scale in closed form.
        xc, yc = pred[i] - pred[i].mean(0), gt[i] - gt[i].mean(0)
        r, _ = orthogonal_procrustes(xc, yc)  # minimises ||xc r - yc||
        assert np.linalg.det(r) > 0
        s = np.trace(xc.T @ yc @ r.T) / (xc ** 2).sum()
        np.testing.assert_allclose(aligned[i], s * xc @ r + gt[i].mean(0), atol=2e-5)
    want = np.linalg.norm(aligned - gt, axis=-1).mean(-1) * 1000
    np.testing.assert_allclose(metrics.pa_mpjpe(pred.astype(np.float32), gt.astype(np.float32)),
                               want, rtol=1e-4)


def test_pa_mpjpe_zero_for_similarity_copy():
    rng = np.random.default_rng(3)
    gt = rng.normal(scale=0.3, size=(4, 14, 3))
    rots, scales, trans = _random_similarity(rng, 4)
    pred = np.einsum("bij,bnj->bni", rots, gt) * scales[:, None, None] + trans[:, None]
    err = np.asarray(metrics.pa_mpjpe(pred.astype(np.float32), gt.astype(np.float32)))
    assert np.all(err < 1e-2), err  # float32: well under a hundredth of a millimetre
    assert np.all(np.asarray(metrics.mpjpe(pred.astype(np.float32), gt.astype(np.float32))) > 10)


def test_reflection_is_not_allowed():
    """A mirrored copy cannot be aligned by a proper rotation: the result is Horn's (proper)
    optimum, not the zero-error reflection that an unconstrained orthogonal fit would find."""
    rng = np.random.default_rng(4)
    gt = rng.normal(scale=0.3, size=(1, 14, 3))
    mirror = np.diag([-1.0, 1.0, 1.0])
    pred = gt @ mirror.T * 1.3 + 0.2
    aligned, (s, r, _) = metrics.similarity_procrustes(
        pred.astype(np.float32), gt.astype(np.float32), return_transform=True)
    np.testing.assert_allclose(np.linalg.det(np.asarray(r)), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(aligned)[0], _horn_similarity(pred[0], gt[0]), atol=2e-5)
    assert float(metrics.pa_mpjpe(pred.astype(np.float32), gt.astype(np.float32))[0]) > 10.0
    r_free, _ = orthogonal_procrustes(pred[0] - pred[0].mean(0), gt[0] - gt[0].mean(0))
    assert np.linalg.det(r_free) < 0  # what the reflection fix rules out


def test_masked_procrustes_ignores_masked_joints():
    rng = np.random.default_rng(5)
    gt = rng.normal(scale=0.3, size=(2, 12, 3))
    rots, scales, trans = _random_similarity(rng, 2)
    pred = np.einsum("bij,bnj->bni", rots, gt) * scales[:, None, None] + trans[:, None]
    mask = np.ones((2, 12), bool)
    mask[:, :3] = False
    pred[:, :3] += rng.normal(scale=5.0, size=(2, 3, 3))  # outliers on masked joints
    pred, gt = pred.astype(np.float32), gt.astype(np.float32)
    assert np.all(np.asarray(metrics.pa_mpjpe(pred, gt, mask)) < 1e-2)
    assert np.all(np.asarray(metrics.pa_mpjpe(pred, gt)) > 50)
    weights = rng.uniform(0.2, 1.0, size=12)
    noisy = pred + rng.normal(scale=0.05, size=pred.shape).astype(np.float32)
    got = np.asarray(metrics.similarity_procrustes(noisy, gt, weights[None].repeat(2, 0)))
    np.testing.assert_allclose(got[1], _horn_similarity(noisy[1], gt[1], weights), atol=2e-5)


def test_jit_and_shapes():
    rng = np.random.default_rng(6)
    pred = jnp.asarray(rng.normal(size=(3, 14, 3)), jnp.float32)
    gt = jnp.asarray(rng.normal(size=(3, 14, 3)), jnp.float32)
    for fn in (metrics.mpjpe, metrics.pa_mpjpe, metrics.pve):
        out = jax.jit(fn)(pred, gt)
        assert out.shape == (3,) and out.dtype == jnp.float32
        np.testing.assert_allclose(out, fn(pred, gt), rtol=1e-5)
    with pytest.raises(ValueError, match="mpjpe"):
        metrics.mpjpe(pred, gt[:, :5])
    # Degenerate input (all points equal) stays finite.
    assert np.all(np.isfinite(np.asarray(metrics.pa_mpjpe(jnp.zeros((1, 5, 3)), gt[:1, :5]))))
