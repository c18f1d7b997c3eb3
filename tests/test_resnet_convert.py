"""ResNet encoder, SPIN regressor and PyTorch-weight conversion.

The parity tests run the "baseline" (SPIN) architecture twice on the same random weights: once in
PyTorch written by hand from torch.nn.functional (torchvision's layout, SPIN's regressor;
`imphmr_jax.testing.torch_reference`), once as our Flax modules with the converted variables.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imphmr_jax import convert
from imphmr_jax.models.regressor import Regressor, load_mean_params, spin_default_mean_params
from imphmr_jax.models.resnet import ResNet, resnet18, resnet50
from imphmr_jax.testing.torch_reference import (random_spin_state, random_torchvision_state,
                                                 torch_spin_forward)

R18, R50 = ((2, 2, 2, 2), "basic"), ((3, 4, 6, 3), "bottleneck")


def key(seed):
    # XLA's RngBitGenerator: the default threefry keys make every init compile for ~15 s on CPU.
    return jax.random.key(seed, impl="rbg")


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# ------------------------------------------------------------------------------------- ResNet


@pytest.mark.parametrize("ctor,expansion", [(resnet18, 1), (resnet50, 4)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_resnet_output_shape_and_dtype(ctor, expansion, dtype):
    model = ctor(width=8, dtype=dtype)

    def init_and_apply(key, x):
        variables = model.init(key, x, train=False)
        return variables, model.apply(variables, x, train=False)

    # Abstract evaluation traces exactly what jit compiles, without the CPU compile time.
    variables, y = jax.eval_shape(init_and_apply, key(0), jnp.ones((2, 64, 64, 3)))
    assert y.shape == (2, 2, 2, 8 * 8 * expansion) and y.dtype == dtype
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))


def test_resnet_bfloat16_compute_under_jit_tracks_float32():
    x = jax.random.normal(key(2), (2, 64, 64, 3))

    @jax.jit
    def init_and_apply(key, x):
        variables = resnet18(width=8).init(key, x, train=False)
        return tuple(resnet18(width=8, dtype=d).apply(variables, x, train=False)
                     for d in (jnp.float32, jnp.bfloat16))

    y32, y16 = init_and_apply(key(0), x)
    assert y16.dtype == jnp.bfloat16 and y32.shape == y16.shape == (2, 2, 2, 64)
    assert rel_err(y16.astype(jnp.float32), y32) < 5e-2


def test_resnet_train_mode_updates_batch_stats_with_torch_momentum():
    model = ResNet(stage_sizes=(1, 1, 1, 1), block="basic", width=8)
    x = jax.random.normal(key(1), (4, 32, 32, 3))

    @jax.jit
    def init_and_train_step(key, x):
        variables = model.init(key, x, train=False)
        return variables, model.apply(variables, x, train=True, mutable=["batch_stats"])[1]

    variables, updates = init_and_train_step(key(0), x)
    new = updates["batch_stats"]
    conv1 = jax.lax.conv_general_dilated(x, variables["params"]["conv1"]["kernel"], (2, 2),
                                         ((3, 3), (3, 3)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # torch momentum 0.1: running = 0.9 * running + 0.1 * batch mean (initial running mean 0)
    np.testing.assert_allclose(new["bn1"]["mean"], 0.1 * conv1.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
    for old_leaf, new_leaf in zip(jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(new)):
        assert not np.allclose(old_leaf, new_leaf)


@pytest.mark.parametrize("layout,width,size", [(R18, 64, 64), (R50, 16, 80)])
def test_spin_baseline_matches_pytorch(layout, width, size):
    (stages, block) = layout
    sd = random_spin_state(stages, block, width)
    images = np.random.default_rng(5).normal(size=(2, size, size, 3)).astype(np.float32)
    pytest.importorskip("torch")
    ref = torch_spin_forward(sd, images, stages, block)

    backbone, reg_params, mean = convert.spin_from_torch(sd, stages, block)
    model = ResNet(stage_sizes=stages, block=block, width=width)
    regressor = Regressor(mean["pose"], mean["shape"], mean["cam"])

    @jax.jit
    def flax_forward(backbone, reg_params, images):
        feats = model.apply(backbone, images, train=False).mean(axis=(1, 2))  # SPIN's avgpool
        return feats, regressor.apply({"params": reg_params}, feats, train=False)

    feats, out = flax_forward(backbone, reg_params, images)
    errors = {"features": rel_err(feats, ref["features"])}
    errors.update({k: rel_err(out[k], ref[k]) for k in ("pose_6d", "betas", "cam", "rotmat")})
    print(f"parity {block} width {width} input {size}: {errors}")
    assert max(errors.values()) < 1e-4, errors

    # The plain torchvision path (with its fc classifier, ignored) converts the same backbone.
    tv = random_torchvision_state(stages, block, width, fc=True)
    chex.assert_trees_all_equal(convert.resnet_from_torch(tv, stages, block), backbone)


# ---------------------------------------------------------------------------------- conversion


def test_conversion_names_missing_and_unexpected_keys():
    sd = random_torchvision_state(*R18, width=8)
    del sd["layer2.0.bn1.running_var"]
    sd["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError) as err:
        convert.resnet_from_torch(sd, *R18)
    assert "layer2.0.bn1.running_var" in str(err.value)
    assert "layer5.0.conv1.weight" in str(err.value)

    variables, report = convert.resnet_from_torch(sd, *R18, strict=False)
    assert report["missing"] == ["layer2.0.bn1.running_var"]
    assert report["unexpected"] == ["layer5.0.conv1.weight"]
    assert {"fc.weight", "fc.bias"} <= set(report["ignored"])
    assert "var" not in variables["batch_stats"]["layer2_0"]["bn1"]


def test_conversion_layout_and_shape_mismatch():
    sd = random_torchvision_state(*R18, width=8, fc=False)
    variables = convert.resnet_from_torch(sd, *R18)
    np.testing.assert_array_equal(variables["params"]["layer1_0"]["conv2"]["kernel"],
                                  sd["layer1.0.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["batch_stats"]["layer3_0"]["downsample_bn"]["var"],
                                  sd["layer3.0.downsample.1.running_var"])
    sd["layer1.1.conv2.weight"] = sd["layer1.1.conv2.weight"][:, :4]
    expected = r"params/layer1_1/conv2/kernel: got \(3, 3, 4, 8\), expected \(3, 3, 8, 8\)"
    with pytest.raises(ValueError, match=expected):
        convert.resnet_from_torch(sd, *R18)


def test_spin_conversion_reports_missing_regressor_and_buffers():
    sd = random_spin_state(*R18, width=8, hidden=32)
    del sd["deccam.bias"], sd["init_cam"]
    with pytest.raises(ValueError, match=r"deccam\.bias.*init_cam|init_cam.*deccam\.bias"):
        convert.spin_from_torch({"model": sd}, *R18)
    _, reg, mean, report = convert.spin_from_torch({"model": sd}, *R18, strict=False)
    assert report["missing"] == ["deccam.bias", "init_cam"]
    assert set(mean) == {"pose", "shape"} and reg["fc1"]["kernel"].shape == (64 + 157, 32)


def test_npz_round_trip_is_identical(tmp_path):
    variables = convert.resnet_from_torch(random_torchvision_state(*R18, width=8), *R18)
    path = tmp_path / "r18.npz"
    convert.save_npz(path, variables)
    loaded = convert.load_npz(path)
    chex.assert_trees_all_equal(loaded, variables)
    assert jax.tree.map(lambda a: a.dtype, loaded) == jax.tree.map(lambda a: a.dtype, variables)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_convert_command(tmp_path, capsys, suffix):
    sd = random_torchvision_state(*R18, width=8)
    src = tmp_path / f"r18{suffix}"
    if suffix == ".pt":
        torch = pytest.importorskip("torch")
        torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, src)
    else:
        np.savez(src, **sd)
    out = tmp_path / "flax.npz"
    assert convert.main(["--torch", str(src), "--kind", "resnet18", "--out", str(out)]) == 0
    assert "fc.weight" in capsys.readouterr().out
    chex.assert_trees_all_equal(convert.load_npz(out), convert.resnet_from_torch(sd, *R18))


def test_convert_command_with_wrong_kind_names_the_keys(tmp_path, capsys):
    src = tmp_path / "r18.npz"
    np.savez(src, **random_torchvision_state(*R18, width=8))
    out = tmp_path / "flax.npz"
    assert convert.main(["--torch", str(src), "--kind", "resnet50", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "layer1.0.conv3.weight" in err and "layer4.2.bn1.bias" in err
    assert not out.exists()


def test_load_torch_file_unwraps_spin_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    sd = random_spin_state(*R18, width=8, hidden=32)
    path = tmp_path / "model_checkpoint.pt"
    torch.save({"model": {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()},
                "epoch": 3}, path)
    loaded = convert.load_torch_file(path)
    assert set(loaded) == set(sd) and isinstance(loaded["fc1.weight"], np.ndarray)
    _, _, mean = convert.spin_from_torch(loaded, *R18)
    np.testing.assert_array_equal(mean["pose"], sd["init_pose"][0])


# ----------------------------------------------------------------------------------- regressor


def _zero_heads(params, pose_bias=None):
    params = jax.tree.map(np.asarray, params)
    for head in ("decpose", "decshape", "deccam"):
        params[head] = jax.tree.map(np.zeros_like, params[head])
    if pose_bias is not None:
        params["decpose"]["bias"] = pose_bias
    return params


def test_regressor_with_zero_heads_returns_mean_params():
    rng = np.random.default_rng(0)
    mean = dict(pose=rng.normal(size=144), shape=rng.normal(size=10), cam=rng.normal(size=3))
    reg = Regressor(tuple(mean["pose"]), tuple(mean["shape"]), tuple(mean["cam"]), hidden=32)
    feats = jnp.asarray(rng.normal(size=(3, 20)), jnp.float32)
    params = _zero_heads(reg.init(key(0), feats, train=False)["params"])
    out = reg.apply({"params": params}, feats, train=True, rngs={"dropout": key(1)})
    np.testing.assert_allclose(out["pose_6d"], np.broadcast_to(mean["pose"], (3, 144)), rtol=1e-6)
    np.testing.assert_allclose(out["betas"], np.broadcast_to(mean["shape"], (3, 10)), rtol=1e-6)
    np.testing.assert_allclose(out["cam"], np.broadcast_to(mean["cam"], (3, 3)), rtol=1e-6)
    init_cam = jnp.arange(9.0).reshape(3, 3)  # per-call starting values override the means
    out = reg.apply({"params": params}, feats, train=False, init_cam=init_cam)
    np.testing.assert_allclose(out["cam"], init_cam)


@pytest.mark.parametrize("n_iter", [1, 3])
def test_regressor_applies_each_iteration_residually(n_iter):
    reg = Regressor(num_iterations=n_iter, hidden=16)
    feats = jnp.ones((2, 8))
    step = np.full(144, 0.01, np.float32)
    params = _zero_heads(reg.init(key(0), feats, train=False)["params"], step)
    out = reg.apply({"params": params}, feats, train=False)
    np.testing.assert_allclose(out["pose_6d"][0], spin_default_mean_params()["pose"] + n_iter * step,
                               rtol=1e-6)


def test_regressor_dropout_only_in_training():
    reg = Regressor(hidden=64)
    feats = jax.random.normal(key(0), (2, 8))
    params = reg.init(key(1), feats, train=False)
    apply = lambda seed, train: reg.apply(params, feats, train=train,
                                          rngs={"dropout": key(seed)})["cam"]
    np.testing.assert_array_equal(apply(0, False), apply(1, False))
    assert not np.allclose(apply(0, True), apply(1, True))


def test_default_mean_is_upright_body():
    mean = spin_default_mean_params()
    np.testing.assert_allclose(mean["cam"], [0.9, 0.0, 0.0])
    np.testing.assert_array_equal(mean["shape"], np.zeros(10))
    reg = Regressor(hidden=16)
    params = _zero_heads(reg.init(key(0), jnp.ones((1, 4)), train=False)["params"])
    rot = np.asarray(reg.apply({"params": params}, jnp.ones((1, 4)), train=False)["rotmat"][0])
    np.testing.assert_allclose(rot[0], np.diag([1.0, -1.0, -1.0]), atol=1e-7)  # R_x(pi)
    np.testing.assert_allclose(rot[1:], np.broadcast_to(np.eye(3), (23, 3, 3)), atol=1e-7)


def test_load_mean_params_names_missing_keys(tmp_path):
    good = tmp_path / "smpl_mean_params.npz"
    np.savez(good, **spin_default_mean_params())
    np.testing.assert_array_equal(load_mean_params(good)["pose"], spin_default_mean_params()["pose"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, pose=np.zeros(144), betas=np.zeros(10))
    with pytest.raises(ValueError, match=r"\['shape', 'cam'\]"):
        load_mean_params(bad)
