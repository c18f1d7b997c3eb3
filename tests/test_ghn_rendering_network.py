"""Claims checked (neuhmr_jax.ghn.rendering_network): ψ's shapes and layer sizes (63-d γ(x_c)),
σ' > 0 and c in [0, 1]; the fusion is a masked mean over views: changing an invalid view's features
changes nothing, the order of the views changes nothing, a point seen by one view of n gives the
same output as that view alone (n = 1), a point seen by no view gives an output independent of the
features, and invalid views get zero gradient; masked_mean equals a numpy masked mean."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuhmr_jax.ghn.rendering_network import RenderingNetwork, masked_mean

N_VIEWS, P, C, WIDTH = 3, 20, 12, 16


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    net = RenderingNetwork(width=WIDTH)
    feats = rng.normal(size=(N_VIEWS, P, C)).astype(np.float32)
    valid = rng.uniform(size=(N_VIEWS, P)) < 0.6
    valid[:, 0] = False  # point 0 seen by no view
    valid[:, 1] = [False, True, False]  # point 1 seen by view 1 only
    valid[:, 2] = True
    x_c = rng.uniform(-1, 1, (P, 3)).astype(np.float32)
    variables = net.init(jax.random.key(0), feats, valid, x_c)
    apply = jax.jit(net.apply)
    return dict(net=net, feats=feats, valid=valid, x_c=x_c, variables=variables, apply=apply,
                out=apply(variables, feats, valid, x_c))


def test_shapes_ranges_and_layer_sizes(setup):
    sigma, rgb = map(np.asarray, setup["out"])
    assert sigma.shape == (P,) and rgb.shape == (P, 3)
    assert sigma.dtype == np.float32 and rgb.dtype == np.float32
    assert np.all(sigma > 0) and np.all(np.isfinite(sigma))
    assert np.all((rgb >= 0) & (rgb <= 1))
    params = setup["variables"]["params"]
    assert params["W_px"]["kernel"].shape == (C, WIDTH)
    assert params["W_a1"]["kernel"].shape == (WIDTH + 63, WIDTH)  # γ with include_input: 3 + 60
    assert params["W_r1"]["kernel"].shape == (WIDTH + 63, WIDTH)
    assert params["W_a"]["kernel"].shape == (WIDTH, 1)
    assert params["W_rgb"]["kernel"].shape == (WIDTH, 3)


def test_invalid_views_are_ignored(setup):
    s = setup
    changed = np.where(s["valid"][..., None], s["feats"],
                       np.random.default_rng(1).normal(size=s["feats"].shape) * 10)
    out = s["apply"](s["variables"], changed.astype(np.float32), s["valid"], s["x_c"])
    for a, b in zip(out, s["out"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_view_order_does_not_matter(setup):
    s = setup
    perm = np.array([2, 0, 1])
    out = s["apply"](s["variables"], s["feats"][perm], s["valid"][perm], s["x_c"])
    for a, b in zip(out, s["out"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_single_valid_view_equals_that_view_alone(setup):
    s = setup
    alone = s["apply"](s["variables"], s["feats"][1:2, 1:2], np.ones((1, 1), bool), s["x_c"][1:2])
    for a, b in zip(alone, s["out"]):
        np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b)[1], rtol=1e-5, atol=1e-6)


def test_unseen_point_output_does_not_depend_on_features(setup):
    s = setup
    other = s["apply"](s["variables"], s["feats"] + 3.0, s["valid"], s["x_c"])
    for a, b in zip(other, s["out"]):
        np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b)[0])


def test_gradient_is_zero_for_invalid_views(setup):
    s = setup

    def loss(f):
        sigma, rgb = s["net"].apply(s["variables"], f, s["valid"], s["x_c"])
        return jnp.sum(sigma) + jnp.sum(rgb)

    g = np.asarray(jax.jit(jax.grad(loss))(s["feats"]))
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[~s["valid"]], 0.0)
    assert np.all(np.abs(g[s["valid"]]).sum(-1) > 0)


def test_masked_mean_matches_numpy():
    rng = np.random.default_rng(2)
    values = rng.normal(size=(4, 6, 3)).astype(np.float32)
    valid = rng.uniform(size=(4, 6)) < 0.5
    valid[:, 0] = False
    out = np.asarray(jax.jit(masked_mean)(values, valid))
    for p in range(6):
        expect = values[valid[:, p], p].mean(0) if valid[:, p].any() else np.zeros(3)
        np.testing.assert_allclose(out[p], expect, rtol=1e-6, atol=1e-6)


def test_unknown_fusion_is_refused(setup):
    s = setup
    with pytest.raises(ValueError, match="fusion"):
        RenderingNetwork(width=WIDTH, fusion="max").init(jax.random.key(0), s["feats"],
                                                         s["valid"], s["x_c"])
