"""Claims checked for ImpHMR's losses (L_reg, L_imag, L_cons) and ESV:
every term is 0 when the predictions are the labels; the GT camera fit recovers the camera that made
the keypoints; L_imag's targets at φ = π/2 turn a body facing the camera to face sideways (hand
computation); samples without labels contribute nothing; gradients are finite, also with nothing
selected; GT silhouettes are wide at φ = 0, narrow at φ = π/2 and equal at φ + 2π; L_cons is 0 for
exact rotations of one prediction; ESV is 0 for constant β and σ = a/√2 for a sinusoid; and the
tiny ImpHMR overfits a fixed batch under total_loss."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import smpl_jax
from imphmr_jax import losses, metrics
from imphmr_jax.geometry import camera as cam_lib
from imphmr_jax.geometry.views import ViewCameraConfig
from imphmr_jax.models import BackboneConfig, ImpHMR
from imphmr_jax.render.rasterize import required_tiles
from smpl_jax.joint_sets import LSP_HIPS, pelvis_centred

B, SIL = 4, 64
TOL = 1e-6


def key(seed):
    # rbg keys compile much faster than threefry on XLA:CPU (see tests/test_imphmr_model.py).
    return jax.random.key(seed, impl="unsafe_rbg")


@functools.lru_cache(maxsize=None)
def body():
    return smpl_jax.load("default-small")


FACING_CAMERA = np.asarray([math.pi, 0.0, 0.0], np.float32)  # R_x(π): SMPL's y-up to camera y-down


@functools.lru_cache(maxsize=None)
def labels():
    """A batch with exact labels: samples 0, 1 full 3D; 2 SMPL only; 3 2D only."""
    rng = np.random.default_rng(0)
    pose = rng.normal(0, 0.2, (B, 24, 3)).astype(np.float32)
    pose[:, 0] = FACING_CAMERA + rng.normal(0, 0.1, (B, 3))
    pose = pose.reshape(B, 72)
    betas = rng.normal(0, 0.5, (B, 10)).astype(np.float32)
    cam = np.stack([rng.uniform(0.8, 1.0, B), rng.uniform(-0.1, 0.1, B),
                    rng.uniform(-0.1, 0.1, B)], -1).astype(np.float32)
    j49 = losses.predicted_joints(body(), losses.gt_rotmat(jnp.asarray(pose)), jnp.asarray(betas))
    kp = losses.project_keypoints(j49, jnp.asarray(cam))
    conf = np.ones((B, 49, 1), np.float32)
    conf[:, :25] = 0.0  # OpenPose detections are not used
    j3d = pelvis_centred(j49[:, 25:], LSP_HIPS)
    batch = dict(keypoints_2d=jnp.concatenate([kp, conf], -1),
                 joints_3d=jnp.concatenate([j3d, jnp.ones((B, 24, 1))], -1),
                 pose=jnp.asarray(pose), betas=jnp.asarray(betas),
                 has_smpl=jnp.asarray([1.0, 1.0, 1.0, 0.0]),
                 has_pose_3d=jnp.asarray([1.0, 1.0, 0.0, 0.0]))
    return batch, jnp.asarray(cam)


PHIS = jnp.asarray([[0.0, 1.1, 2.0], [0.0, 4.0, 0.5], [0.0, 2.5, 5.9], [0.0, 0.3, 3.3]])


@functools.lru_cache(maxsize=None)
def tiles():
    batch, cam = labels()
    t = cam_lib.weak_perspective_to_translation(cam)
    out = smpl_jax.forward(body(), losses.gt_rotmat(batch["pose"]), batch["betas"])
    intr = cam_lib.rescale_intrinsics(cam_lib.spin_intrinsics(), 224, SIL)
    return 2 * required_tiles(out.vertices + t[:, None], body().faces, intr, SIL, SIL)


def silhouettes(phi, pose=None, betas=None, cam_t=None):
    batch, cam = labels()
    pose = batch["pose"] if pose is None else pose
    betas = batch["betas"] if betas is None else betas
    cam_t = cam_lib.weak_perspective_to_translation(cam) if cam_t is None else cam_t
    return _silhouette_fn(tiles())(body(), pose, betas, cam_t, phi)


@functools.lru_cache(maxsize=None)
def _silhouette_fn(max_tiles):
    return jax.jit(functools.partial(losses.gt_silhouettes, size=SIL, max_tiles=max_tiles))


def exact_outputs(batch, cam, phis):
    """Predictions equal to the ground truth at every view (B, V, ...)."""
    rot = jnp.stack([losses.imag_targets(batch, phis[:, v])["rotmat"]
                     for v in range(phis.shape[1])], 1)
    sil = jnp.stack([silhouettes(phis[:, v]) for v in range(phis.shape[1])], 1)
    v = phis.shape[1]
    return dict(rotmat=rot, betas=jnp.repeat(batch["betas"][:, None], v, 1),
                cam=jnp.repeat(cam[:, None], v, 1), silhouette_logits=30.0 * (2.0 * sil - 1.0))


loss_fn = jax.jit(losses.total_loss, static_argnames=("stop_gradient_target",))


def test_all_terms_vanish_at_the_labels():
    batch, cam = labels()
    out = exact_outputs(batch, cam, PHIS)
    sil = silhouettes(PHIS[:, 1])
    _, terms = loss_fn(out, batch, PHIS, body(), gt_silhouette=sil)
    for name, value in terms.items():
        assert abs(float(value)) < 1e-5, (name, float(value))
    # silhouettes rendered as the train step does, with the GT camera fitted from the keypoints
    fitted = silhouettes(PHIS[:, 1], cam_t=losses.gt_camera_translation(batch, body()))
    _, fitted_terms = loss_fn(out, batch, PHIS, body(), gt_silhouette=fitted)
    assert abs(float(fitted_terms["imag_silh"])) < 1e-5
    # two views: L_cons between views 0 and 1
    _, two = loss_fn(jax.tree.map(lambda x: x[:, :2], out), batch, PHIS[:, :2], body(),
                     gt_silhouette=sil)
    assert abs(float(two["L_all"])) < 1e-5
    assert set(terms) >= {"reg_2d", "reg_3d", "reg_pose", "reg_shape", "reg_cam", "imag_3d",
                          "imag_pose", "imag_shape", "imag_silh", "cons_pose", "cons_shape"}


def test_silhouette_of_the_imagination_view_only():
    """Logits decoded for view 1 only ((B, 1, S, S), the train step's silhouette_views=(1,)) give
    the same terms as logits for every view; a wrong view count is an error."""
    batch, cam = labels()
    out = exact_outputs(batch, cam, PHIS)
    out["silhouette_logits"] = jax.random.normal(  # a non-zero silhouette term
        jax.random.key(0), out["silhouette_logits"].shape)
    sil = silhouettes(PHIS[:, 1])
    _, full = loss_fn(out, batch, PHIS, body(), gt_silhouette=sil)
    only = dict(out, silhouette_logits=out["silhouette_logits"][:, 1:2])
    _, one = loss_fn(only, batch, PHIS, body(), gt_silhouette=sil)
    assert float(full["imag_silh"]) > 1e-3
    for k in full:
        np.testing.assert_allclose(float(one[k]), float(full[k]), rtol=1e-6, err_msg=k)
    with pytest.raises(ValueError, match="view 1 only"):
        losses.total_loss(dict(out, silhouette_logits=out["silhouette_logits"][:, :2]), batch,
                          PHIS, body(), gt_silhouette=sil)


def test_gt_camera_translation_recovers_the_camera():
    batch, cam = labels()
    t = losses.gt_camera_translation(batch, body())
    np.testing.assert_allclose(t, cam_lib.weak_perspective_to_translation(cam), rtol=1e-3,
                               atol=1e-3)


def test_imag_targets_turn_a_body_facing_the_camera_sideways():
    pose = jnp.zeros((1, 72)).at[0, :3].set(FACING_CAMERA)
    j24 = losses.predicted_joints(body(), losses.gt_rotmat(pose), jnp.zeros((1, 10)))[:, 25:]
    j24 = pelvis_centred(j24, LSP_HIPS)
    batch = dict(pose=pose, joints_3d=jnp.concatenate([j24, jnp.ones((1, 24, 1))], -1))
    t = losses.imag_targets(batch, jnp.asarray([math.pi / 2]))
    # Facing the camera (-z) seen from φ = π/2: R_y(π/2)(0, 0, -1) = (-1, 0, 0), facing -x.
    front = t["rotmat"][0, 0] @ jnp.asarray([0.0, 0.0, 1.0])
    np.testing.assert_allclose(front, [-1.0, 0.0, 0.0], atol=TOL)
    np.testing.assert_allclose(t["rotmat"][0, 1:], losses.gt_rotmat(pose)[0, 1:], atol=TOL)
    # Joints: (x, y, z) -> (z, y, -x) about the pelvis; the right hip (GT24 #2, image left at φ=0)
    # moves away from the camera.
    x, y, z = (j24[0, :, i] for i in range(3))
    np.testing.assert_allclose(t["joints_3d"][0, :, :3], jnp.stack([z, y, -x], -1), atol=1e-6)
    np.testing.assert_allclose(t["joints_3d"][0, :, 3], 1.0)
    assert j24[0, 2, 0] < 0 and t["joints_3d"][0, 2, 2] > 0.05
    # and the turned body's own joints (forward kinematics of the target pose) agree
    j_turned = losses.predicted_joints(body(), t["rotmat"], jnp.zeros((1, 10)))[:, 25:]
    np.testing.assert_allclose(pelvis_centred(j_turned, LSP_HIPS)[0], t["joints_3d"][0, :, :3],
                               atol=1e-5)


def test_unlabelled_samples_contribute_nothing():
    batch, cam = labels()
    rng = np.random.default_rng(1)
    out = jax.tree.map(lambda x: x + 0.05 * rng.normal(size=x.shape).astype(np.float32),
                       exact_outputs(batch, cam, PHIS))
    sil = silhouettes(PHIS[:, 1])
    ref, ref_terms = loss_fn(out, batch, PHIS, body(), gt_silhouette=sil)
    # sample 3 has no SMPL / 3D labels, sample 2 no 3D joints: scramble what they do not have,
    # and the 2D keypoints of zero confidence (OpenPose) of everyone.
    changed = dict(batch)
    changed["pose"] = batch["pose"].at[3].set(rng.normal(size=72))
    changed["betas"] = batch["betas"].at[3].set(rng.normal(size=10) * 3)
    changed["joints_3d"] = batch["joints_3d"].at[2:, :, :3].set(rng.normal(size=(2, 24, 3)))
    changed["keypoints_2d"] = batch["keypoints_2d"].at[:, :25, :2].set(rng.normal(size=(B, 25, 2)))
    sil_changed = sil.at[3].set(1.0 - sil[3])
    val, terms = loss_fn(out, changed, PHIS, body(), gt_silhouette=sil_changed)
    for name in ref_terms:
        np.testing.assert_allclose(terms[name], ref_terms[name], rtol=1e-6, err_msg=name)
    # and changing a labelled sample's labels does change it
    changed["betas"] = batch["betas"].at[0].add(1.0)
    assert float(loss_fn(out, changed, PHIS, body(), gt_silhouette=sil)[0]) > float(ref) + 1e-3


@pytest.mark.parametrize("labelled", [True, False])
def test_gradients_are_finite(labelled):
    batch, cam = labels()
    if not labelled:  # nothing selects any sample: those terms are exactly 0
        batch = dict(batch, has_smpl=jnp.zeros(B), has_pose_3d=jnp.zeros(B),
                     keypoints_2d=batch["keypoints_2d"].at[..., 2].set(0.0))
    out = exact_outputs(batch, cam, PHIS)
    out = jax.tree.map(lambda x: x + 0.1 * jnp.sin(jnp.arange(x.size).reshape(x.shape)), out)
    grad_fn = jax.jit(jax.value_and_grad(losses.total_loss, has_aux=True))
    (val, terms), g = grad_fn(out, batch, PHIS, body(), gt_silhouette=silhouettes(PHIS[:, 1]))
    assert np.isfinite(float(val))
    for leaf in jax.tree.leaves(g):
        assert np.all(np.isfinite(leaf))
    if not labelled:
        for name in ("reg_2d", "reg_3d", "reg_pose", "reg_shape", "imag_3d", "imag_pose",
                     "imag_shape", "imag_silh"):
            assert float(terms[name]) == 0.0, name
        assert float(terms["cons_pose"]) > 0
        assert np.all(np.asarray(g["silhouette_logits"]) == 0.0)
    else:
        assert float(terms["cons_pose"]) > 0 and float(terms["imag_silh"]) > 0


def test_gt_silhouettes_follow_the_view():
    pose = jnp.zeros((1, 72)).at[0, :3].set(FACING_CAMERA)  # T-pose facing the camera
    betas = jnp.zeros((1, 10))
    cam_t = cam_lib.weak_perspective_to_translation(jnp.asarray([[0.9, 0.0, 0.0]]))
    width = lambda s: int(np.sum(np.asarray(s[0]).any(axis=0)))  # columns covered
    front = silhouettes(jnp.asarray([0.0]), pose, betas, cam_t)
    side = silhouettes(jnp.asarray([math.pi / 2]), pose, betas, cam_t)
    again = silhouettes(jnp.asarray([math.pi / 2 + 2 * math.pi]), pose, betas, cam_t)
    assert set(np.unique(front)) <= {0.0, 1.0}
    # arm span ≈ 1.7 m · 0.9 -> ~0.77 of the half width; the side view is only the body's depth
    assert width(front) > 0.6 * SIL and width(side) < 0.3 * SIL, (width(front), width(side))
    assert np.sum(np.asarray(side) != np.asarray(again)) <= 2  # float rounding of φ + 2π at edges


def test_consistency_is_zero_for_exact_rotations():
    batch, _ = labels()
    phi1, phi2 = jnp.asarray([0.3, 1.0, 2.0, 5.0]), jnp.asarray([2.0, -1.0, 4.0, 0.1])
    p1 = dict(rotmat=losses.imag_targets(batch, phi1)["rotmat"], betas=batch["betas"])
    p2 = dict(rotmat=losses.imag_targets(batch, phi2)["rotmat"], betas=batch["betas"])
    mask = jnp.ones(B)
    val, _ = losses.L_cons(p1, p2, phi1, phi2, mask)
    assert float(val) < 1e-10
    # swapping the views is also consistent; the same rotation at the wrong φ is not
    assert float(losses.L_cons(p2, p1, phi2, phi1, mask)[0]) < 1e-10
    assert float(losses.L_cons(p1, p1, phi1, phi2, mask)[0]) > 1.0
    # stop_gradient_target: only the φ2 side receives gradient
    g1, g2 = jax.grad(lambda a, b: losses.L_cons(a, b, phi1, phi2, mask,
                                                 stop_gradient_target=True)[0], (0, 1))(p1, p1)
    assert np.all(np.asarray(g1["rotmat"]) == 0) and np.any(np.asarray(g2["rotmat"]) != 0)


def test_esv():
    assert np.all(np.asarray(metrics.esv(jnp.ones((3, 360, 10)) * jnp.arange(10.0))) == 0)
    phis = metrics.esv_phis()
    amp = jnp.arange(1.0, 11.0)
    betas = amp * jnp.sin(phis)[:, None] + 0.5  # population std of a·sin over a full period = a/√2
    np.testing.assert_allclose(metrics.esv(betas[None]), [float(jnp.mean(amp)) / math.sqrt(2)],
                               rtol=1e-5)
    # the chunked model sweep sees φ = 0°..359° in order
    fn = lambda x, p: amp * jnp.sin(p)[..., None] + jnp.mean(x, axis=(1, 2, 3))[:, None, None]
    np.testing.assert_allclose(metrics.esv_of_model(fn, jnp.zeros((2, 4, 4, 3)), chunk_size=90),
                               [float(jnp.mean(amp)) / math.sqrt(2)] * 2, rtol=1e-5)


def test_tiny_imphmr_overfits_a_fixed_batch():
    batch, cam = labels()
    phis = PHIS[:, :2]
    model = ImpHMR(backbone=BackboneConfig(depth=18, width=8), feature_size=32, field_hidden=16,
                   map_size=SIL // 32, camera=ViewCameraConfig(num_samples=8),
                   regressor_hidden=64, decoder_channels=(16, 8, 8, 8, 1), dropout=0.0,
                   density_noise=0.0)
    images = jax.random.uniform(key(1), (B, 64, 64, 3))
    sil = silhouettes(phis[:, 1])
    variables = jax.jit(lambda k: model.init(k, images, phis, False))(key(0))
    params, stats = variables["params"], variables["batch_stats"]
    # As in tests/test_imphmr_model.py: with this seed h's σ starts all ≤ 0 (sigma_out bias), the
    # rendered maps are 0 and nothing reaches R through the field; start it with some density.
    so = params["feature_field"]["sigma_out"]
    params = dict(params, feature_field=dict(params["feature_field"],
                                             sigma_out=dict(so, bias=so["bias"] + 1.0)))
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    def loss_of(params, stats, k):
        out, new = model.apply({"params": params, "batch_stats": stats}, images, phis, True,
                               rngs=dict(dropout=k, sampling=k, density_noise=k),
                               mutable=["batch_stats"])
        val, _ = losses.total_loss(out, batch, phis, body(), gt_silhouette=sil)
        return val, new["batch_stats"]

    @jax.jit
    def step(params, stats, opt_state, k):
        (val, stats), g = jax.value_and_grad(loss_of, has_aux=True)(params, stats, k)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, val

    history = []
    for i in range(300):
        params, stats, opt_state, val = step(params, stats, opt_state, key(100 + i))
        history.append(float(val))
    assert np.all(np.isfinite(history))
    initial, final = history[0], np.mean(history[-10:])
    assert final < 0.3 * initial, (initial, final)


def test_camera_prior_is_spins_for_positive_scales_and_linear_below_zero():
    s = jnp.array([0.0, 0.3, 0.9, 2.0])
    cam = jnp.stack([s, jnp.zeros(4), jnp.zeros(4)], -1)
    spin = jnp.mean(jnp.square(jnp.exp(-10.0 * s)))  # SPIN's loss_cam
    assert float(losses.camera_prior(cam)) == float(spin)
    bad = jnp.array([[-1.0, 0.0, 0.0], [-50.0, 0.0, 0.0]])
    np.testing.assert_allclose(losses.camera_prior(bad), (21.0 + 1001.0) / 2)
    grad = jax.grad(lambda c: losses.camera_prior(c))(bad)
    np.testing.assert_allclose(grad[:, 0], [-10.0, -10.0])  # d/ds mean(1 - 20 s)
    # Continuous value and slope at s = 0.
    g = jax.grad(lambda x: losses.camera_prior(jnp.array([[x, 0.0, 0.0]])))
    np.testing.assert_allclose([g(1e-4), g(-1e-4)], [-20.0, -20.0], rtol=3e-3)


def test_aux_keypoint_loss_uses_the_last_k_labels():
    """K = 24 predictions are compared with the 24 ground-truth joints (the last 24 of SPIN's 49),
    weighted by their confidence; a direct numpy formula."""
    rng = np.random.default_rng(0)
    pred = rng.uniform(-1, 1, (3, 24, 2)).astype(np.float32)
    gt = rng.uniform(-1, 1, (3, 49, 3)).astype(np.float32)
    gt[..., 2] = rng.integers(0, 2, (3, 49))
    got = float(losses.aux_keypoint_loss(jnp.asarray(pred), jnp.asarray(gt)))
    want = np.mean(gt[:, 25:, 2:] * (pred - gt[:, 25:, :2]) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    with pytest.raises(ValueError, match="50 auxiliary"):
        losses.aux_keypoint_loss(jnp.zeros((1, 50, 2)), jnp.asarray(gt))


def test_soft_argmax_2d_of_a_peaked_map_is_the_pixel_centre():
    from imphmr_jax.models.imphmr import soft_argmax_2d
    maps = np.full((2, 8, 16, 2), -1e4, np.float32)
    maps[0, 2, 5, 0] = maps[1, 7, 15, 1] = 0.0
    maps[0, :, :, 1] = 0.0  # uniform: the image centre
    maps[1, 0, 0, 0] = 0.0
    out = np.asarray(soft_argmax_2d(jnp.asarray(maps)))
    np.testing.assert_allclose(out[0, 0], [5.5 / 16 * 2 - 1, 2.5 / 8 * 2 - 1], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out[1, 1], [15.5 / 16 * 2 - 1, 7.5 / 8 * 2 - 1], atol=1e-6)
    np.testing.assert_allclose(out[1, 0], [0.5 / 16 * 2 - 1, 0.5 / 8 * 2 - 1], atol=1e-6)
