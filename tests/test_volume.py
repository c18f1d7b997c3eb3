"""Claims checked: eq. 4 integration gives Beer-Lambert opacity, picks out an opaque sample, agrees
with a plain numpy GIRAFFE re-implementation, has finite gradients at zero / huge / negative density
that match finite differences; eq. 1 encoding has GIRAFFE's values and ordering; sampled depths
cover [near, far] with one jittered sample per stratum; vmap and jit change nothing."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imphmr_jax.render import volume

# Tests call jitted versions: eager mode compiles every primitive separately and is much slower.
# test_jit_equals_eager checks that eager gives the same values.
integrate = jax.jit(volume.integrate)
positional_encoding = jax.jit(volume.positional_encoding,
                              static_argnames=("num_octaves", "include_input"))
sample_depths = jax.jit(volume.sample_depths, static_argnames=("num_samples", "batch_shape"))


def _all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


def _scalar_loss(sigma, features, depths, ray_norm=1.0):
    """A scalar that touches every output of integrate, for gradient checks."""
    out = volume.integrate(sigma, features, depths, ray_norm)
    proj = jnp.linspace(-1.0, 2.0, features.shape[-1], dtype=out.features.dtype)
    return jnp.sum(out.features * proj) + jnp.sum(out.depth) + jnp.sum(out.opacity ** 2)


def _giraffe_numpy(sigma, features, depths, ray_norm, last_delta=1e10):
    """Eq. 4 (docs/method.md#volume-rendering) written out like GIRAFFE's `calc_volume_weights`,
    in float64 numpy."""
    depths = np.broadcast_to(depths, sigma.shape)
    dists = np.concatenate([depths[..., 1:] - depths[..., :-1],
                            np.full(depths.shape[:-1] + (1,), last_delta)], axis=-1)
    dists = dists * np.asarray(ray_norm)[..., None]
    alpha = 1.0 - np.exp(-np.maximum(sigma, 0.0) * dists)
    factors = np.concatenate([np.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-10], axis=-1)
    weights = alpha * np.cumprod(factors, axis=-1)[..., :-1]
    return (np.sum(weights[..., None] * features, axis=-2), weights,
            np.sum(weights * depths, axis=-1), np.sum(weights, axis=-1))


def _random_inputs(rng, batch=(2, 5), samples=12, channels=3, per_ray_depths=True):
    sigma = rng.normal(0.0, 2.0, size=batch + (samples,))  # some negative: ReLU must apply
    features = rng.normal(size=batch + (samples, channels))
    depth_shape = batch + (samples,) if per_ray_depths else (samples,)
    depths = 0.5 + np.cumsum(rng.uniform(0.05, 0.6, size=depth_shape), axis=-1)
    ray_norm = rng.uniform(0.8, 1.5, size=batch)
    return sigma, features, depths, ray_norm


# ---------------------------------------------------------------------------------------------
# integrate


@pytest.mark.parametrize("ray_norm", [1.0, 2.0])
def test_constant_density_gives_beer_lambert_opacity(ray_norm):
    sigma_value, near, length, s = 2.0, 0.5, 1.5, 257
    depths = jnp.linspace(near, near + length, s)
    # The last sample has zero density, so GIRAFFE's 1e10 interval after it adds nothing.
    sigma = jnp.full((1, s), sigma_value).at[:, -1].set(0.0)
    out = integrate(sigma, jnp.ones((1, s, 1)), depths, ray_norm)
    expected = 1.0 - np.exp(-sigma_value * length * ray_norm)
    np.testing.assert_allclose(out.opacity, [expected], atol=1e-5)
    np.testing.assert_allclose(out.features[:, 0], [expected], atol=1e-5)


def test_single_opaque_sample_gives_its_depth_and_feature():
    s, k = 16, 5
    depths = jnp.linspace(0.5, 6.0, s)
    sigma = jnp.zeros((1, s)).at[0, k].set(1e4)
    features = jax.random.normal(jax.random.key(0), (1, s, 4))
    out = integrate(sigma, features, depths)
    chex.assert_shape([out.features, out.weights, out.depth, out.opacity],
                      [(1, 4), (1, s), (1,), (1,)])
    np.testing.assert_allclose(out.opacity, [1.0], atol=1e-6)
    np.testing.assert_allclose(out.depth, [depths[k]], rtol=1e-6)
    np.testing.assert_allclose(out.features, features[:, k], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.weights, jax.nn.one_hot([k], s), atol=1e-6)


def test_zero_density_renders_nothing_with_finite_gradients():
    sigma, features = jnp.zeros((3, 8)), jnp.ones((3, 8, 2))
    depths = jnp.linspace(0.5, 6.0, 8)
    out = integrate(sigma, features, depths)
    np.testing.assert_array_equal(out.opacity, 0.0)
    np.testing.assert_array_equal(out.features, 0.0)
    np.testing.assert_array_equal(out.depth, 0.0)
    grads = jax.jit(jax.grad(_scalar_loss, argnums=(0, 1)))(sigma, features, depths)
    assert _all_finite(grads)


@pytest.mark.parametrize("pattern", ["all_huge", "alternating", "huge_last_only", "huge_first"])
def test_huge_density_gives_finite_values_and_gradients(pattern):
    s = 10
    huge = {
        "all_huge": np.ones(s, bool),
        "alternating": np.arange(s) % 2 == 0,
        "huge_last_only": np.arange(s) == s - 1,  # 1e30 times the 1e10 last interval overflows
        "huge_first": np.arange(s) == 0,
    }[pattern]
    sigma = jnp.where(huge, 1e30, 0.0)[None].repeat(2, axis=0)
    features = jax.random.normal(jax.random.key(1), (2, s, 3))
    depths = jnp.linspace(0.5, 6.0, s)
    out = integrate(sigma, features, depths, jnp.array([1.0, 3.0]))
    assert _all_finite(out)
    np.testing.assert_allclose(out.opacity, 1.0, atol=1e-6)
    first = int(np.argmax(huge))  # the first opaque sample takes all the weight
    np.testing.assert_allclose(out.features, features[:, first], rtol=1e-5, atol=1e-6)
    grads = jax.jit(jax.grad(_scalar_loss, argnums=(0, 1)))(sigma, features, depths)
    assert _all_finite(grads)


def test_negative_density_counts_as_zero():
    rng = np.random.default_rng(2)
    sigma, features, depths, ray_norm = _random_inputs(rng)
    a = integrate(sigma, features, depths, ray_norm)
    b = integrate(np.maximum(sigma, 0.0), features, depths, ray_norm)
    chex.assert_trees_all_close(a, b)
    assert (sigma < 0).any()


@pytest.mark.parametrize("per_ray_depths", [True, False])
def test_integrate_matches_numpy_giraffe_formula(per_ray_depths):
    rng = np.random.default_rng(3)
    sigma, features, depths, ray_norm = _random_inputs(rng, per_ray_depths=per_ray_depths)
    sigma[0, 0, 3:5] = 1e3  # include saturated samples, where GIRAFFE's 1e-10 matters
    with jax.enable_x64(True):
        out = integrate(sigma, features, depths, ray_norm)
        assert out.weights.dtype == jnp.float64
        for got, want in zip(out, _giraffe_numpy(sigma, features, depths, ray_norm)):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)


def test_gradient_wrt_density_matches_finite_differences():
    rng = np.random.default_rng(4)
    _, features, depths, ray_norm = _random_inputs(rng, batch=(3,), samples=8)
    sigma = rng.uniform(0.1, 3.0, size=(3, 8))  # away from the ReLU kink at 0
    eps = 1e-6
    with jax.enable_x64(True):
        loss = jax.jit(lambda s: _scalar_loss(s, features, depths, ray_norm))
        grad = jax.grad(loss)(sigma)
        bumps = eps * np.eye(sigma.size).reshape((-1,) + sigma.shape)
        fd = (jax.vmap(loss)(sigma + bumps) - jax.vmap(loss)(sigma - bumps)) / (2 * eps)
        np.testing.assert_allclose(grad, np.reshape(fd, sigma.shape), rtol=1e-6, atol=1e-9)


def test_weights_are_nonnegative_and_sum_to_at_most_one():
    rng = np.random.default_rng(5)
    sigma = rng.normal(size=(64, 32)) * 10.0 ** rng.uniform(-3, 30, size=(64, 1))
    depths = np.sort(rng.uniform(0.5, 6.0, size=(64, 32)), axis=-1)
    out = integrate(sigma, np.ones((64, 32, 1)), depths)
    assert (out.weights >= 0).all()
    # GIRAFFE's +1e-10 in each transmittance factor lets the sum exceed 1 by ~S * 1e-10 at most.
    assert (out.opacity <= 1.0 + 1e-6).all()
    assert (out.opacity > 0.99).any() and (out.opacity < 0.5).any()


# ---------------------------------------------------------------------------------------------
# positional_encoding


def test_positional_encoding_shape():
    x = jnp.zeros((4, 7, 3))
    chex.assert_shape(positional_encoding(x, 10), (4, 7, 60))
    chex.assert_shape(positional_encoding(x, 4), (4, 7, 24))
    chex.assert_shape(positional_encoding(x, 10, include_input=True), (4, 7, 63))


def test_positional_encoding_values_at_known_inputs():
    np.testing.assert_allclose(positional_encoding(jnp.zeros(1), 3), [0, 1, 0, 1, 0, 1])
    # x = 0.5: octave 0 is (sin pi/2, cos pi/2) = (1, 0), octave 1 is (sin pi, cos pi) = (0, -1).
    np.testing.assert_allclose(positional_encoding(jnp.array([0.5]), 2), [1, 0, 0, -1],
                               atol=1e-6)
    x = jnp.array([0.25, -0.7])
    with_input = positional_encoding(x, 2, include_input=True)
    np.testing.assert_array_equal(with_input[:2], x)
    np.testing.assert_array_equal(with_input[2:], positional_encoding(x, 2))


def test_positional_encoding_ordering_is_sin_block_then_cos_block_per_octave():
    x = np.array([0.1, -0.37, 0.8])
    want = np.concatenate([np.concatenate([np.sin(2**i * np.pi * x), np.cos(2**i * np.pi * x)])
                           for i in range(4)])
    np.testing.assert_allclose(positional_encoding(jnp.asarray(x), 4), want, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# sample_depths


def test_sample_depths_without_key_is_linspace_with_endpoints():
    d = sample_depths(0.5, 6.0, 32, batch_shape=(2, 3))
    chex.assert_shape(d, (2, 3, 32))
    np.testing.assert_allclose(d, np.broadcast_to(np.linspace(0.5, 6.0, 32), (2, 3, 32)),
                               rtol=1e-6)
    near, far = jnp.array([0.5, 1.0]), jnp.array([2.0, 4.0])  # per-ray ranges
    d = sample_depths(near, far, 4, batch_shape=(2,))
    np.testing.assert_allclose(d, [[0.5, 1.0, 1.5, 2.0], [1.0, 2.0, 3.0, 4.0]], rtol=1e-6)


def test_jittered_depths_are_one_per_stratum_sorted_and_per_ray():
    near, far, n, rays = 0.5, 6.0, 32, 100
    key = jax.random.key(7)
    d = np.asarray(sample_depths(near, far, n, key=key, batch_shape=(rays,)))
    chex.assert_shape(d, (rays, n))
    grid = np.linspace(near, far, n)
    mids = 0.5 * (grid[1:] + grid[:-1])
    lower, upper = np.concatenate([[near], mids]), np.concatenate([mids, [far]])
    assert ((d >= lower - 1e-6) & (d <= upper + 1e-6)).all()
    assert (np.diff(d, axis=-1) >= 0).all()
    assert (d >= near).all() and (d <= far).all()
    assert not np.allclose(d[0], d[1])  # independent per ray
    assert not np.allclose(d, grid)  # actually jittered
    np.testing.assert_array_equal(d, sample_depths(near, far, n, key=key,
                                                          batch_shape=(rays,)))
    assert not np.allclose(d, sample_depths(near, far, n, key=jax.random.key(8),
                                                   batch_shape=(rays,)))


# ---------------------------------------------------------------------------------------------
# transformations


def test_vmap_over_batch_equals_batched_call():
    rng = np.random.default_rng(6)
    sigma, features, depths, ray_norm = _random_inputs(rng, batch=(4, 6))
    batched = integrate(sigma, features, depths, ray_norm)
    mapped = jax.jit(jax.vmap(volume.integrate))(sigma, features, depths, ray_norm)
    chex.assert_trees_all_close(batched, mapped, rtol=1e-6, atol=1e-7)
    x = rng.normal(size=(4, 6, 3))
    chex.assert_trees_all_close(jax.jit(jax.vmap(lambda p: volume.positional_encoding(p, 10)))(x),
                                positional_encoding(x, 10), rtol=1e-6, atol=1e-6)


def test_jit_equals_eager():
    rng = np.random.default_rng(7)
    sigma, features, depths, ray_norm = _random_inputs(rng)
    eager = volume.integrate(sigma, features, depths, ray_norm)
    chex.assert_trees_all_close(eager, integrate(sigma, features, depths, ray_norm),
                                rtol=1e-6, atol=1e-7)
    key = jax.random.key(9)
    chex.assert_trees_all_close(sample_depths(0.5, 6.0, 16, key=key, batch_shape=(5,)),
                                volume.sample_depths(0.5, 6.0, 16, key=key, batch_shape=(5,)),
                                rtol=1e-6)
    x = rng.normal(size=(5, 3))
    chex.assert_trees_all_close(positional_encoding(x, 4), volume.positional_encoding(x, 4),
                                rtol=1e-6, atol=1e-6)


def test_integrate_occupancy_scales_alpha():
    """alpha_j = w'_j (1 - exp(-sigma_j delta_j)) and the transmittance uses the scaled alphas
    (HumanNeRF's foreground weight), against a direct numpy product; w' = 1 is the plain integral."""
    rng = np.random.default_rng(3)
    r, s = 5, 12
    sigma = rng.uniform(0, 8, (r, s))
    depths = np.sort(rng.uniform(1, 3, (r, s)), axis=-1)
    occ = rng.uniform(0, 1, (r, s))
    feats = rng.normal(size=(r, s, 2))
    out = integrate(sigma, feats, depths, last_delta=0.1, occupancy=occ)
    delta = np.concatenate([np.diff(depths, axis=-1), np.full((r, 1), 0.1)], axis=-1)
    alpha = occ * (1 - np.exp(-sigma * delta))
    trans = np.concatenate([np.ones((r, 1)), np.cumprod(1 - alpha + 1e-10, axis=-1)[:, :-1]], -1)
    w = alpha * trans
    np.testing.assert_allclose(out.weights, w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.features, (w[..., None] * feats).sum(1), rtol=1e-4, atol=1e-5)
    plain = integrate(sigma, feats, depths, last_delta=0.1)
    ones = integrate(sigma, feats, depths, last_delta=0.1, occupancy=np.ones((r, s)))
    np.testing.assert_allclose(ones.weights, plain.weights, atol=1e-6)


def test_integrate_occupancy_gradients_finite_at_extremes():
    """w' in {0, 1} and infinite optical depth: value and gradients stay finite."""
    sigma = jnp.array([[0.0, 1e30, 5.0, 1e30]])
    depths = jnp.array([[1.0, 1.5, 2.0, 2.5]])
    feats = jnp.ones((1, 4, 1))

    def f(sig, occ):
        return integrate(sig, feats, depths, occupancy=occ).features.sum()

    occ = jnp.array([[0.0, 1.0, 0.5, 1.0]])
    gs, go = jax.grad(f, argnums=(0, 1))(sigma, occ)
    assert np.isfinite(f(sigma, occ))
    assert np.all(np.isfinite(gs)) and np.all(np.isfinite(go))
