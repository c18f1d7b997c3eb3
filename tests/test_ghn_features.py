"""Claims checked (neuhmr_jax.ghn.features): sample_features equals a direct numpy bilinear formula
of grid_sample's align_corners=False mapping (border-clamped) at random sub-pixel points, is exact
at feature-map element centres, marks out-of-image, behind-camera and non-finite points invalid
with zero features and zero gradient, and its gradient w.r.t. the pixels matches central finite
differences; project_points equals K (R x + t) / z for (3, 3) and (4,) intrinsics and stays finite
at z = 0; the ResNet's intermediates end in its default output; 𝓕 run on converted torchvision
ResNet-18 weights (random weights and BN statistics) equals the full ResNet-18's stem, layer1 and
layer2 on the [-1, 1]-scaled image, with the two coarse maps upsampled by torch's align_corners=True
formula, concatenated in that order."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imphmr_jax import convert
from imphmr_jax.models.resnet import ResNet
from imphmr_jax.testing.torch_reference import random_torchvision_state
from neuhmr_jax.ghn import features

H, W = 16, 24  # image
h, w, C = 8, 12, 5  # feature map at half resolution
sample = jax.jit(features.sample_features, static_argnames=("image_size",))
project = jax.jit(features.project_points)


@pytest.fixture(scope="module")
def fmap():
    return np.random.default_rng(0).normal(size=(h, w, C)).astype(np.float32)


def _numpy_bilinear(F, u, v):
    """grid_sample(align_corners=False, padding_mode='border') of the full image onto F, float64:
    normalised g = 2u/W - 1, index x = ((g + 1) w - 1) / 2, clamped to [0, w - 1]."""
    hh, ww = F.shape[:2]
    x = np.clip(((2 * u / W - 1 + 1) * ww - 1) / 2, 0, ww - 1)
    y = np.clip(((2 * v / H - 1 + 1) * hh - 1) / 2, 0, hh - 1)
    x0 = np.minimum(np.floor(x).astype(int), ww - 2)
    y0 = np.minimum(np.floor(y).astype(int), hh - 2)
    ax, ay = (x - x0)[:, None], (y - y0)[:, None]
    F = F.astype(np.float64)
    return ((1 - ay) * ((1 - ax) * F[y0, x0] + ax * F[y0, x0 + 1])
            + ay * ((1 - ax) * F[y0 + 1, x0] + ax * F[y0 + 1, x0 + 1]))


def test_sample_features_matches_numpy_bilinear(fmap):
    rng = np.random.default_rng(1)
    uv = rng.uniform([0, 0], [W, H], (500, 2)).astype(np.float32)
    uv[:4] = [[0, 0], [W, H], [0.3, H - 0.2], [W - 0.1, 0.7]]  # corners and border bands
    feats, valid = sample(fmap, uv, (H, W), np.ones(500, np.float32))
    assert np.all(np.asarray(valid))
    np.testing.assert_allclose(np.asarray(feats), _numpy_bilinear(fmap, uv[:, 0], uv[:, 1]),
                               atol=1e-5)


def test_sample_features_exact_at_feature_centres(fmap):
    # Element (i, j) of a half-resolution map sits at image position (2j + 1, 2i + 1).
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    uv = np.stack([2 * jj + 1, 2 * ii + 1], -1).reshape(-1, 2).astype(np.float32)
    feats, _ = sample(fmap, uv, (H, W), np.ones(len(uv), np.float32))
    np.testing.assert_array_equal(np.asarray(feats), fmap.reshape(-1, C))


def test_sample_features_valid_mask(fmap):
    uv = np.array([[-0.01, 5], [W + 0.01, 5], [5, -0.01], [5, H + 0.01],  # outside
                   [5, 5], [5, 5],  # inside but depth 0 / behind the camera
                   [np.nan, 5], [np.inf, 5],  # non-finite
                   [0, 0], [W, H], [5, 5]], np.float32)  # boundary and inside: valid
    depth = np.array([1, 1, 1, 1, 0, -2, 1, 1, 1, 1, 3], np.float32)
    feats, valid = sample(fmap, uv, (H, W), depth)
    expect = np.array([0] * 8 + [1] * 3, bool)
    np.testing.assert_array_equal(np.asarray(valid), expect)
    np.testing.assert_array_equal(np.asarray(feats)[~expect], 0.0)
    assert np.all(np.abs(np.asarray(feats)[expect]) > 0)
    g = jax.jit(jax.grad(lambda p: features.sample_features(fmap, p, (H, W), depth)[0].sum()))(uv)
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_array_equal(np.asarray(g)[~expect], 0.0)


def test_sample_features_gradient_matches_finite_differences(fmap):
    rng = np.random.default_rng(2)
    # Map indices with fractional parts in [0.2, 0.8]: the finite differences stay in one cell.
    idx = rng.integers([0, 0], [w - 1, h - 1], (50, 2)) + rng.uniform(0.2, 0.8, (50, 2))
    uv = ((idx + 0.5) * 2.0).astype(np.float32)  # image = 2 (index + 0.5) at half resolution
    proj = rng.normal(size=C).astype(np.float32)
    depth = np.ones(50, np.float32)

    def f(p):
        return jnp.sum(features.sample_features(fmap, p, (H, W), depth)[0] * proj, -1)

    grad = np.asarray(jax.jit(jax.vmap(jax.grad(lambda p: f(p[None])[0])))(uv))
    eps = 0.05
    f_j = jax.jit(f)
    for a in range(2):
        e = np.zeros(2, np.float32)
        e[a] = eps
        fd = (np.asarray(f_j(uv + e), np.float64) - np.asarray(f_j(uv - e))) / (2 * eps)
        np.testing.assert_allclose(grad[:, a], fd, atol=2e-4, rtol=1e-3)


def test_project_points_matches_matrix_formula():
    rng = np.random.default_rng(3)
    rvec = rng.normal(size=3) * 0.5
    angle = np.linalg.norm(rvec)
    k = rvec / angle
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    R = (np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx).astype(np.float32)
    t = np.array([0.1, -0.2, 4.0], np.float32)
    K = np.array([[300.0, 0, 12.0], [0, 310.0, 8.0], [0, 0, 1]], np.float32)
    x = rng.uniform(-1, 1, (2, 7, 3)).astype(np.float32)
    cam = x.astype(np.float64) @ R.T + t
    hom = cam @ K.T.astype(np.float64)
    for intr in (K, np.array([300.0, 310.0, 12.0, 8.0], np.float32)):
        pix, depth = project(x, intr, R, t)
        assert pix.shape == (2, 7, 2) and depth.shape == (2, 7)
        np.testing.assert_allclose(np.asarray(pix), hom[..., :2] / hom[..., 2:], rtol=1e-4)
        np.testing.assert_allclose(np.asarray(depth), cam[..., 2], rtol=1e-5)
    # A point on the camera plane: finite pixels and gradient, depth 0, hence invalid.
    on_plane = np.array([[0.3, 0.2, -4.0]], np.float32)
    eye = np.eye(3, dtype=np.float32)
    pix, depth = project(on_plane, K, eye, t)
    assert np.all(np.isfinite(np.asarray(pix))) and float(depth[0]) == 0.0
    g = jax.grad(lambda p: project(p, K, eye, t)[0].sum())(on_plane)
    assert np.all(np.isfinite(np.asarray(g)))


def _numpy_resize_align_corners(x, n_out):
    """torch F.interpolate(bilinear, align_corners=True) to n_out × n_out, float64, NHWC."""
    n_in = x.shape[1]
    s = np.arange(n_out) * (n_in - 1) / (n_out - 1)
    i0 = np.minimum(np.floor(s).astype(int), n_in - 2)
    f = s - i0
    x = x.astype(np.float64)
    rows = x[:, i0] * (1 - f)[None, :, None, None] + x[:, i0 + 1] * f[None, :, None, None]
    return rows[:, :, i0] * (1 - f)[None, None, :, None] + rows[:, :, i0 + 1] * f[None, None, :, None]


@pytest.fixture(scope="module")
def resnet18_setup():
    width = 8
    sd = random_torchvision_state((2, 2, 2, 2), "basic", width, seed=4)
    full_vars = convert.resnet_from_torch(sd, (2, 2, 2, 2), "basic")
    images = np.random.default_rng(5).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    full = ResNet(stage_sizes=(2, 2, 2, 2), block="basic", width=width)
    inter = jax.jit(lambda v, x: full.apply(v, x, False, return_intermediates=True))(
        full_vars, 2.0 * images - 1.0)
    default = jax.jit(lambda v, x: full.apply(v, x, False))(full_vars, 2.0 * images - 1.0)
    return dict(width=width, full_vars=full_vars, images=images, inter=inter, default=default)


def test_resnet_intermediates_end_in_the_default_output(resnet18_setup):
    inter, wd = resnet18_setup["inter"], resnet18_setup["width"]
    np.testing.assert_array_equal(np.asarray(inter["layer4"]), np.asarray(resnet18_setup["default"]))
    shapes = {k: v.shape for k, v in inter.items()}
    assert shapes == {"stem": (2, 16, 16, wd), "layer1": (2, 8, 8, wd),
                      "layer2": (2, 4, 4, 2 * wd), "layer3": (2, 2, 2, 4 * wd),
                      "layer4": (2, 1, 1, 8 * wd)}


def test_feature_extractor_on_converted_resnet18(resnet18_setup):
    s = resnet18_setup
    wd = s["width"]
    model = features.FeatureExtractor(width=wd)
    fe_vars = features.variables_from_resnet(s["full_vars"])
    shapes = jax.eval_shape(model.init, jax.random.key(0), s["images"])
    assert (jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(fe_vars))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: a.shape == b.shape,
                                                         shapes, fe_vars))
    F = np.asarray(jax.jit(model.apply)(fe_vars, s["images"]))
    assert F.shape == (2, 16, 16, 4 * wd) and F.dtype == np.float32
    inter = {k: np.asarray(v) for k, v in s["inter"].items()}
    np.testing.assert_allclose(F[..., :wd], inter["stem"], atol=1e-5)
    np.testing.assert_allclose(F[..., wd:2 * wd], _numpy_resize_align_corners(inter["layer1"], 16),
                               atol=1e-5)
    np.testing.assert_allclose(F[..., 2 * wd:], _numpy_resize_align_corners(inter["layer2"], 16),
                               atol=1e-5)
    # align_corners=True: the corner elements of the upsampled maps are the coarse maps' corners.
    np.testing.assert_allclose(F[:, -1, -1, 2 * wd:], inter["layer2"][:, -1, -1], atol=1e-6)


def test_variables_from_resnet_names_missing_entries(resnet18_setup):
    v = resnet18_setup["full_vars"]
    broken = {"params": {k: x for k, x in v["params"].items() if k != "layer2_1"},
              "batch_stats": v["batch_stats"]}
    with pytest.raises(KeyError, match="layer2_1"):
        features.variables_from_resnet(broken)
