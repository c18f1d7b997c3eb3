"""Φ^GHN end to end at a tiny size: rendering, gradients w.r.t. the target pose, the train step on
the training spine (kill and resume = uninterrupted; 8 fake devices = 1 device), evaluation."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ghn_fixtures import SIZE, params_npz, tiny_config, tiny_people
from neuhmr_jax.ghn import data as ghn_data
from neuhmr_jax.ghn import evaluation as ghn_eval
from neuhmr_jax.ghn.model import Camera, References
from neuhmr_jax.train_ghn import build_ghn, load_ghn, train_ghn

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def people():
    return tiny_people()


@pytest.fixture(scope="module")
def setup(people):
    config = tiny_config()
    ghn = build_ghn(config)
    variables = ghn.init(jax.random.PRNGKey(0), (SIZE, SIZE))
    x = ghn_data.assemble(people, ghn_data.sample_triplets(np.random.default_rng(0), people, 1),
                          config.ghn.background)
    x = jax.tree.map(lambda a: jnp.asarray(a[0]), x)
    return config, ghn, variables, x


def _render(ghn, variables, x, pose, pixels, transl=None):
    refs = References(x["ref_image"], Camera(x["ref_K"], x["ref_R"], x["ref_t"]), x["ref_pose"],
                      x["ref_transl"])
    return ghn.render(variables, Camera(x["K"], x["R"], x["t"]), pose, x["betas"], refs, pixels,
                      transl=x["transl"] if transl is None else transl, image_size=(SIZE, SIZE))


def test_rays_that_miss_the_person_see_the_background(setup):
    config, ghn, variables, x = setup
    # The image corners are far outside the posed box (joints ± 0.3 m): W = 0, C = background.
    pixels = jnp.array([[0.5, 0.5], [SIZE - 0.5, 0.5], [0.5, SIZE - 0.5]])
    mask = np.asarray(x["mask"])
    assert not mask[0, 0] and not mask[0, -1] and not mask[-1, 0]
    out = jax.jit(lambda v: _render(ghn, v, x, x["pose"], pixels))(variables)
    np.testing.assert_allclose(out.occupancy, 0.0, atol=1e-6)
    np.testing.assert_allclose(out.rgb, np.broadcast_to(config.ghn.background, (3, 3)), atol=1e-6)
    # Pixels on the person: inside the box, a positive occupancy and a depth near the camera z of
    # the person (its root), within the box's depth range.
    rows, cols = np.nonzero(mask)
    on = jnp.asarray(np.stack([cols[:8], rows[:8]], -1) + 0.5, jnp.float32)
    out = jax.jit(lambda v: _render(ghn, v, x, x["pose"], on))(variables)
    assert np.all(np.asarray(out.occupancy) > 0)
    root_z = float((x["R"] @ x["transl"] + x["t"])[2])
    assert np.all(np.abs(np.asarray(out.depth) - root_z) < 1.5)


def test_gradient_wrt_pose_is_finite_and_matches_finite_differences(setup):
    config, ghn, variables, x = setup
    rows, cols = np.nonzero(np.asarray(x["mask"]))
    pick = np.linspace(0, len(rows) - 1, 24).astype(int)
    pixels = jnp.asarray(np.stack([cols[pick], rows[pick]], -1) + 0.5, jnp.float32)
    target = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (24, 3)), jnp.float32)

    def loss(pose):
        out = _render(ghn, variables, x, pose, pixels)
        return jnp.mean((out.rgb - target) ** 2) + jnp.mean(out.occupancy)

    f = jax.jit(loss)
    g = np.asarray(jax.jit(jax.grad(loss))(x["pose"]))
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    # Directional derivatives along random pose directions (the rendering is piecewise smooth:
    # trilinear volumes, so central differences with a moderate step).
    rng = np.random.default_rng(1)
    eps = 1e-2
    for _ in range(3):
        d = rng.normal(size=(24, 3)).astype(np.float32)
        d /= np.linalg.norm(d)
        fd = (float(f(x["pose"] + eps * d)) - float(f(x["pose"] - eps * d))) / (2 * eps)
        np.testing.assert_allclose(float(np.sum(g * d)), fd, rtol=0.15,
                                   atol=0.05 * np.abs(g).sum() * 1e-2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, people):
    workdir = str(tmp_path_factory.mktemp("ghn") / "run")
    result = train_ghn(tiny_config(), workdir, people=people, test_people=people)
    return workdir, result


def test_training_writes_metrics_checkpoints_and_figures(uninterrupted):
    workdir, result = uninterrupted
    rows = [l for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert len(rows) >= 3
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "3"))
    assert os.path.isfile(os.path.join(workdir, "eval", "summary.json"))
    assert os.path.isfile(os.path.join(workdir, "eval", "figures", "target_0.png"))
    m = result["eval"]["metrics"]
    assert set(ghn_eval.METRICS) <= set(m) and m["count"] == 2
    assert 0.0 <= m["iou"] <= 1.0 and np.isfinite(m["psnr"])


def test_resume_after_kill_matches_uninterrupted(uninterrupted, tmp_path, people):
    workdir, result = uninterrupted

    class Killed(Exception):
        pass

    def kill_at_2(step):
        if step == 2:
            raise Killed

    run = str(tmp_path / "run")
    config = tiny_config()
    config.eval.max_targets = 0  # the parameters are compared, not the evaluation
    with pytest.raises(Killed):
        train_ghn(config, run, people=people, test_people=people, step_hook=kill_at_2)
    resumed = train_ghn(config, run, people=people, test_people=people)
    assert resumed["eval"] is None
    a, b = params_npz(result["state"]), params_npz(resumed["state"])
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_load_ghn_and_evaluate_match_the_run(uninterrupted, people):
    workdir, result = uninterrupted
    ghn, variables, config = load_ghn(workdir)
    summary = ghn_eval.evaluate(ghn, variables, people, config, max_targets=2)
    np.testing.assert_allclose(summary["metrics"]["psnr"], result["eval"]["metrics"]["psnr"],
                               rtol=1e-4)


def test_eight_devices_match_one_device(tmp_path):
    outs = {}
    for n in (1, 8):
        out = tmp_path / f"d{n}"
        out.mkdir()
        proc = subprocess.run([sys.executable, os.path.join(HERE, "ghn_worker.py"), str(out),
                               str(n)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        outs[n] = np.load(out / "params.npz")
    for k in outs[1].files:
        np.testing.assert_allclose(outs[8][k], outs[1][k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_render_and_compare_loss_is_lowest_at_the_true_pose(people):
    """The property NeuHMR relies on, at a tiny size and without training: with the body's
    skinning weights, the sharp rest-surface occupancy and a saturated density, W is the posed
    body's silhouette, so rotating a major joint by ±15° raises the loss against the real frame,
    and Adam on that joint's rotation brings it back. The untrained ψ's colours carry no pose
    information, so the loss is the silhouette term: it cannot see a twist about a limb's own
    axis (hence 80%, not the trained GHN's 90%), nor fix the whole pose at 32 px (so the
    recovery frees only the perturbed joint; `eval_ghn --pose_targets` measures both on a
    trained GHN)."""
    from neuhmr_jax.ghn import pose_sensitivity as ps
    from neuhmr_jax.ghn.rendering_network import RenderingNetwork
    config = tiny_config()
    config.ghn.volume_resolution = 32
    config.ghn.volume_widths = (8, 8, 8, 8)
    config.ghn.occupancy = "surface"
    config.ghn.num_samples = 24
    config.loss.occupancy_bce = 1000.0  # the silhouette term only
    ghn = build_ghn(config)
    ghn.psi = RenderingNetwork(width=config.ghn.psi_width, pe_octaves=config.ghn.pe_octaves,
                               density_bias=30.0)
    variables = ghn.init(jax.random.PRNGKey(0), (SIZE, SIZE))
    joints = ("root", "left_hip", "right_knee", "left_shoulder", "right_elbow")
    pert = ps.perturbation_study(ghn, variables, people, config, num_targets=1, joints=joints)
    assert pert["count"] == len(joints) * 6
    assert pert["fraction_higher"] >= 0.8, pert["per_joint"]
    rec = ps.recovery_study(ghn, variables, people, config, num_targets=4, steps=30,
                            learning_rate=0.02, joints=joints, free="perturbed")
    assert rec["error_after_mm"] < 0.7 * rec["error_before_mm"], rec["rows"]


def test_patch_pixels_are_whole_patches_around_the_person():
    mask = np.zeros((SIZE, SIZE), bool)
    mask[10:20, 12:16] = True
    px = np.asarray(ghn_data.patch_pixels(jax.random.PRNGKey(0), jnp.asarray(mask), 3, 8))
    assert px.shape == (3 * 64, 2)
    for p in px.reshape(3, 8, 8, 2):
        cols, rows = p[..., 0] - 0.5, p[..., 1] - 0.5
        # row-major 8x8 blocks of whole pixels, inside the image, centred near the mask's box
        np.testing.assert_array_equal(cols, cols[0][None, :].repeat(8, 0))
        np.testing.assert_array_equal(rows, rows[:, 0][:, None].repeat(8, 1))
        assert np.all(np.diff(cols[0]) == 1) and np.all(np.diff(rows[:, 0]) == 1)
        assert cols.min() >= 0 and cols.max() < SIZE and rows.min() >= 0 and rows.max() < SIZE
        assert 10 - 4 <= rows.mean() <= 19 + 4 and 12 - 4 <= cols.mean() <= 15 + 4


def test_ssim_term_enters_the_loss(setup, people):
    """With loss.ssim > 0 the step renders square patches and adds ssim·(1 − SSIM)."""
    from neuhmr_jax.train_ghn import ghn_losses
    config, ghn, variables, _ = setup
    batch = ghn_data.assemble(people, ghn_data.sample_triplets(np.random.default_rng(1), people,
                                                               2), config.ghn.background)
    config = tiny_config()
    config.loss.ssim = 0.5
    config.loss.num_patches = 1
    config.loss.patch_size = 8
    loss, terms = jax.jit(lambda v, b: ghn_losses(ghn, v, b, jax.random.PRNGKey(0), config,
                                                  (SIZE, SIZE)))(variables, batch)
    assert -1.0 <= float(terms["ssim"]) <= 1.0
    want = (config.loss.mse * terms["mse"] + config.loss.occupancy_bce * terms["occupancy_bce"]
            + 0.5 * (1.0 - terms["ssim"]))
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
