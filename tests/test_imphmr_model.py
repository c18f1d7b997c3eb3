"""Claims checked for the ImpHMR model and its ablation baselines (tiny configs):
every variant gives the documented shapes and dtypes in float32 and bfloat16 (bfloat16 within a few
per cent of float32; map sizes 1-6 give 32x silhouettes); rendering at φ and φ + 2π is the same;
V views in one call equal V single-view calls; φ = None is the input view φ = 0; eval is
deterministic and training draws on each of its rngs; gradients of a scalar of all outputs are
finite; zero regressor weights return the mean parameters; attention lies in (0, 1) and both z_fg
poolings follow their formulas; the baseline ignores φ; rendering from φ equals rendering the body
turned by R_y(φ) from φ = 0 (field and PTN volume alike); PTN's sampler is exact at voxel centres;
the backbone may be given as a module or as a config."""
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imphmr_jax.geometry.views import R_y, ViewCameraConfig, view_rays
from imphmr_jax.models import (BackboneConfig, ForegroundAttention, ImpHMR,
                               perspective_max_projection, trilinear_sample, volume_render_views)
from imphmr_jax.models.regressor import spin_default_mean_params
from smpl_jax.rotations import rot6d_to_matrix

B, RES, M_F = 2, 64, 32
PHIS = jnp.asarray([[0.0, 1.3], [2.5, -0.7]], jnp.float32)
REGRESSION = ("pose_6d", "rotmat", "betas", "cam")
TAILS = dict(pose_6d=(144,), rotmat=(24, 3, 3), betas=(10,), cam=(3,))


def key(seed):
    # XLA:CPU compiles threefry-based initialisers very slowly (~20 s for a tiny ResNet);
    # rbg keys compile in a few seconds and are as good for tests.
    return jax.random.key(seed, impl="unsafe_rbg")


def cached(fn):
    """lru_cache keyed on the full argument list, so f() and f("imphmr") share one entry."""
    cache = functools.lru_cache(maxsize=None)(fn)
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return cache(*bound.args)

    return wrapper


@cached
def tiny(variant="imphmr", map_size=2, dtype="float32"):
    return ImpHMR(variant=variant, backbone=BackboneConfig(depth=18, width=8), feature_size=M_F,
                  field_hidden=16, map_size=map_size, camera=ViewCameraConfig(num_samples=8),
                  regressor_hidden=64, decoder_channels=(16, 8, 8, 8, 1), dtype=jnp.dtype(dtype))


# Each (variant, map size) is initialised and each apply compiled once; params are float32 for
# every compute dtype, so the bfloat16 models reuse the float32 variables.
@cached
def variables(variant="imphmr", map_size=2):
    model = tiny(variant, map_size)
    v = jax.jit(lambda k, x, phis: model.init(k, x, phis, False))(key(0), images(), PHIS)
    if variant == "imphmr":
        # h's initial density is dominated by the sigma_out bias; when that draw is negative every
        # sample is empty at eval (σ ≤ 0 before the ReLU) and f_φ = 0, which would make the view
        # tests vacuous. Shift it so that the rendered maps are non-trivial.
        sigma_out = v["params"]["feature_field"]["sigma_out"]
        sigma_out = dict(sigma_out, bias=sigma_out["bias"] + 1.0)
        field = dict(v["params"]["feature_field"], sigma_out=sigma_out)
        v = dict(v, params=dict(v["params"], feature_field=field))
    return v


@cached
def evaluator(variant="imphmr", map_size=2, dtype="float32"):
    model = tiny(variant, map_size, dtype)
    return jax.jit(lambda v, x, phis: model.apply(v, x, phis, False, return_silhouette=True))


@cached
def trainer(variant="imphmr"):
    """Training-mode apply -> (d scalar / d params, outputs), the scalar touching every output.

    One compiled function serves both the rng and the gradient tests."""
    model = tiny(variant)

    def scalar(params, v, x, phis, keys):
        out = model.apply({**v, "params": params}, x, phis, True, rngs=keys,
                          mutable=["batch_stats"])[0]
        return sum(jnp.sum(jnp.sin(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(out)), out

    grad = jax.grad(scalar, has_aux=True)
    return jax.jit(lambda v, x, phis, keys: grad(v["params"], v, x, phis, keys))


@functools.lru_cache(maxsize=None)
def images():
    return jax.random.normal(key(42), (B, RES, RES, 3), jnp.float32)


def rng_keys(dropout=1, sampling=2, density_noise=3):
    return dict(dropout=key(dropout), sampling=key(sampling), density_noise=key(density_noise))


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("variant", ["imphmr", "ptn", "baseline"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_output_shapes_and_dtypes(variant, dtype):
    out = evaluator(variant, 2, dtype)(variables(variant), images(), PHIS)
    views = 1 if variant == "baseline" else PHIS.shape[1]
    for k in REGRESSION:  # the running SMPL estimate is float32 whatever the compute dtype
        assert out[k].shape == (B, views) + TAILS[k] and out[k].dtype == jnp.float32, k
    if variant == "baseline":
        assert set(out) == set(REGRESSION)
    else:
        assert out["feature_map"].shape == (B, views, 2, 2, M_F)
        assert out["silhouette_logits"].shape == (B, views, 64, 64)
        assert out["attention"].shape == (B, 2, 2, 1)  # 64 px / 32
        for k in ("feature_map", "silhouette_logits", "attention"):
            assert out[k].dtype == jnp.dtype(dtype), k
    assert all(np.isfinite(np.asarray(x, np.float32)).all() for x in jax.tree.leaves(out))
    if dtype == "bfloat16":  # bfloat16 compute stays within a few per cent of float32
        ref = evaluator(variant, 2, "float32")(variables(variant), images(), PHIS)
        for k, val in out.items():
            val, want = np.asarray(val, np.float32), np.asarray(ref[k])
            np.testing.assert_allclose(val, want, atol=0.02 * np.abs(want).max() + 1e-3, err_msg=k)


@pytest.mark.parametrize("map_size", [1, 4, 6])
def test_map_sizes_give_32x_silhouettes(map_size):
    # Shapes only (traced, not compiled): the 4x4 paper setting, and 1 and 6 of its speed study.
    model = tiny("imphmr", map_size)
    v = jax.eval_shape(lambda k, x, phis: model.init(k, x, phis, False), key(0), images(), PHIS)
    out = jax.eval_shape(lambda v, x, phis, keys: model.apply(
        v, x, phis, True, rngs=keys, mutable=["batch_stats"])[0], v, images(), PHIS, rng_keys())
    assert out["feature_map"].shape == (B, 2, map_size, map_size, M_F)
    assert out["silhouette_logits"].shape == (B, 2, 32 * map_size, 32 * map_size)


@pytest.mark.parametrize("variant", ["imphmr", "ptn"])
def test_phi_and_phi_plus_two_pi_agree(variant):
    run, v = evaluator(variant), variables(variant)
    a, b = run(v, images(), PHIS), run(v, images(), PHIS + 2 * np.pi)
    # Only the float32 rounding of φ + 2π itself (~5e-7 rad) separates the two.
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4), a, b)


def test_views_in_one_call_equal_separate_calls():
    run, v = evaluator(), variables()
    together = run(v, images(), PHIS)
    for i in range(PHIS.shape[1]):
        alone = run(v, images(), PHIS[:, i:i + 1])
        for k, val in alone.items():
            want = together[k] if k == "attention" else together[k][:, i:i + 1]
            np.testing.assert_allclose(val, want, rtol=1e-5, atol=1e-5, err_msg=k)


def test_views_actually_differ_and_none_is_the_input_view():
    run, v = evaluator(), variables()
    out = run(v, images(), PHIS)
    assert np.abs(np.asarray(out["feature_map"])).sum(axis=(2, 3, 4)).min() > 0
    assert not np.allclose(out["feature_map"][:, 0], out["feature_map"][:, 1])
    at_zero = run(v, images(), np.zeros((B, 1), np.float32))
    default = run(v, images(), None)
    assert_trees_equal(default, at_zero)


@pytest.mark.parametrize("variant", ["imphmr", "ptn"])
def test_eval_is_deterministic(variant):
    run, v = evaluator(variant), variables(variant)
    assert_trees_equal(run(v, images(), PHIS), run(v, images(), PHIS))


def test_training_uses_each_rng():
    run = lambda *a: trainer()(*a)[1]
    v = variables()
    base = run(v, images(), PHIS, rng_keys())
    assert_trees_equal(base, run(v, images(), PHIS, rng_keys()))  # same keys, same result
    # Dropout acts in the regressor only; jitter and density noise change the rendered map.
    other_dropout = run(v, images(), PHIS, rng_keys(dropout=11))
    np.testing.assert_array_equal(other_dropout["feature_map"], base["feature_map"])
    assert not np.allclose(other_dropout["pose_6d"], base["pose_6d"])
    for name in ("sampling", "density_noise"):
        other = run(v, images(), PHIS, rng_keys(**{name: 17}))
        assert not np.allclose(other["feature_map"], base["feature_map"]), name


@pytest.mark.parametrize("variant", ["imphmr", "ptn"])  # the baseline's graph is a subset
def test_gradients_of_all_outputs_are_finite(variant):
    grads, _ = trainer(variant)(variables(variant), images(), PHIS, rng_keys())
    leaves = jax.tree.leaves(grads)
    # numpy, not jnp: eager jnp would compile a kernel for every leaf shape.
    leaves = [np.asarray(g) for g in leaves]
    assert all(np.isfinite(g).all() for g in leaves)
    assert sum(np.abs(g).sum() for g in leaves) > 0


@pytest.mark.parametrize("variant", ["imphmr", "baseline"])
def test_zero_regressor_returns_the_mean_parameters(variant):
    v = variables(variant)
    params = dict(v["params"], regressor=jax.tree.map(np.zeros_like, v["params"]["regressor"]))
    out = evaluator(variant)({**v, "params": params}, images(), PHIS)
    mean = spin_default_mean_params()
    views = out["pose_6d"].shape[1]
    for key, value in (("pose_6d", mean["pose"]), ("betas", mean["shape"]), ("cam", mean["cam"])):
        np.testing.assert_allclose(out[key], np.broadcast_to(value, (B, views) + value.shape),
                                   atol=1e-6)
    rot = jax.jit(rot6d_to_matrix)(mean["pose"].reshape(24, 6))
    np.testing.assert_allclose(out["rotmat"], np.broadcast_to(rot, (B, views, 24, 3, 3)), atol=1e-6)


@pytest.mark.parametrize("variant", ["imphmr", "ptn"])
def test_attention_lies_strictly_between_zero_and_one(variant):
    a = evaluator(variant)(variables(variant), images(), PHIS)["attention"]
    a = np.asarray(a)
    assert (a > 0).all() and (a < 1).all()


def test_baseline_ignores_phis():
    run, v = evaluator("baseline"), variables("baseline")
    out = run(v, images(), PHIS)
    assert_trees_equal(out, run(v, images(), PHIS + 1.0))


def test_ptn_sampler_hits_voxel_centres_and_is_zero_outside():
    sample = jax.jit(trilinear_sample, static_argnums=2)  # eager would compile op by op
    vol = jax.random.normal(key(5), (1, 4, 4, 4, 3))
    extent = 1.5
    ijk = np.array([[0, 0, 0], [1, 2, 3], [3, 3, 0], [2, 1, 1]])
    centres = -extent + (2 * ijk + 1) * extent / 4
    outside = np.array([[0.0, 0.0, 2.0], [-3.0, 0.0, 0.0]])
    got = sample(vol, jnp.asarray(np.concatenate([centres, outside])[None]), extent)[0]
    np.testing.assert_allclose(got[:4], vol[0, ijk[:, 0], ijk[:, 1], ijk[:, 2]], atol=1e-6)
    np.testing.assert_array_equal(got[4:], 0.0)
    # Half-way between two centres along z: their mean.
    mid = jnp.asarray(((centres[1] + centres[1] - [0, 0, 2 * extent / 4]) / 2)[None, None])
    np.testing.assert_allclose(sample(vol, mid, extent)[0, 0],
                               (vol[0, 1, 2, 3] + vol[0, 1, 2, 2]) / 2, atol=1e-6)


def test_foreground_attention_pooling_modes():
    feats = jax.random.normal(key(3), (2, 3, 3, 6))
    gate = {p: ForegroundAttention(pooling=p) for p in ("mean", "weighted")}
    v = jax.jit(lambda k, x: gate["mean"].init(k, x, False))(key(4), feats)

    @jax.jit
    def pooled(x):
        res = {}
        for name, g in gate.items():
            att, a = g.apply(v, x, False)
            res[name] = (att, a, g.apply(v, att, a, method=g.pool))
        return res

    res = pooled(feats)
    att, a, z = (np.asarray(t) for t in res["mean"])
    assert a.shape == (2, 3, 3, 1) and ((a > 0) & (a < 1)).all()
    np.testing.assert_allclose(att, np.asarray(feats) * a, rtol=1e-6)
    np.testing.assert_allclose(z, att.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res["weighted"][2], att.sum(axis=(1, 2)) / a.sum(axis=(1, 2)),
                               rtol=1e-5, atol=1e-6)


def _blob_field(centre, width=0.3):
    """A radial density blob at `centre` with a position-dependent feature (x, y, z, 1)."""
    def field(points, viewdirs):
        sq = jnp.sum((points - jnp.asarray(centre)) ** 2, axis=-1)
        sigma = 20.0 * jnp.exp(-sq / width**2)
        feats = jnp.concatenate([points - jnp.asarray(centre), jnp.ones_like(points[..., :1])], -1)
        return sigma, feats
    return field


def test_rendering_at_phi_sees_the_body_turned_by_r_y_phi():
    # A body point X appears in camera φ as R_y(φ) X appears in camera 0 (geometry.views), so a
    # radial blob at X0 rendered from φ equals the blob at R_y(φ) X0 rendered from 0.
    cam = ViewCameraConfig(num_samples=64)
    x0, phi = np.array([0.4, -0.2, 0.3]), 1.1
    moved = np.asarray(R_y(phi)) @ x0

    @jax.jit
    def both():
        rays_phi = view_rays(jnp.full((1, 1), phi), 3, 3, cam)
        rays_0 = view_rays(jnp.zeros((1, 1)), 3, 3, cam)
        return (volume_render_views(_blob_field(x0), rays_phi, cam),
                volume_render_views(_blob_field(moved), rays_0, cam))

    a, b = both()
    assert np.asarray(a.opacity).max() > 0.5  # the blob is actually seen
    # Opacity, depth and the constant channel are rotation invariant; the offset features are
    # body-frame vectors and turn with the body.
    np.testing.assert_allclose(a.opacity, b.opacity, atol=1e-5)
    np.testing.assert_allclose(a.depth, b.depth, atol=1e-4)
    np.testing.assert_allclose(a.features[..., 3], b.features[..., 3], atol=1e-5)
    rot_feats = np.einsum("ij,...j->...i", np.asarray(R_y(phi)), np.asarray(a.features[..., :3]))
    np.testing.assert_allclose(rot_feats, b.features[..., :3], atol=1e-5)


def test_ptn_projection_at_quarter_turn_equals_the_turned_volume_at_zero():
    # R_y(π/2) maps body (x, y, z) to (z, y, -x); on the 4³ grid that is V'[i, j, k] = V[3-k, j, i].
    cam = ViewCameraConfig(num_samples=16)
    vol = jax.random.normal(key(7), (1, 4, 4, 4, 5))
    turned = jnp.transpose(vol[:, ::-1], (0, 3, 2, 1, 4))
    project = jax.jit(lambda v, phi: perspective_max_projection(
        v, view_rays(jnp.full((1, 1), phi), 4, 4, cam), cam, 1.0))
    np.testing.assert_allclose(project(vol, np.pi / 2), project(turned, 0.0), atol=1e-5)
    assert not np.allclose(project(vol, np.pi / 2), project(vol, 0.0))


def test_backbone_given_as_module_or_config_builds_the_same_parameters():
    from imphmr_jax.models.resnet import resnet18
    shapes = []
    for backbone in (BackboneConfig(depth=18, width=8), resnet18(width=8)):
        model = tiny().clone(backbone=backbone)
        v = jax.eval_shape(lambda k, x, phis: model.init(k, x, phis, False), key(0), images(), PHIS)
        shapes.append(jax.tree.map(lambda s: s.shape, v))
    assert "backbone" in shapes[0]["params"]
    assert shapes[0] == shapes[1]


@pytest.mark.parametrize("variant", ["imphmr", "ptn"])
def test_silhouette_views_decodes_only_the_chosen_views(variant):
    """silhouette_views=(1,) gives the view-1 silhouette of a full decode (eval mode: the same BN
    statistics), leaves every other output unchanged, and rejects indices outside the views."""
    model, v = tiny(variant), variables(variant)
    full = evaluator(variant)(v, images(), PHIS)
    one = jax.jit(lambda v, x, p: model.apply(v, x, p, False, return_silhouette=True,
                                              silhouette_views=(1,)))(v, images(), PHIS)
    assert one["silhouette_logits"].shape == (B, 1) + full["silhouette_logits"].shape[2:]
    np.testing.assert_allclose(one["silhouette_logits"][:, 0], full["silhouette_logits"][:, 1],
                               rtol=1e-5, atol=1e-5)
    for k in REGRESSION:
        np.testing.assert_array_equal(one[k], full[k])
    with pytest.raises(ValueError, match="silhouette_views"):
        model.apply(v, images(), PHIS, False, return_silhouette=True, silhouette_views=(2,))
