"""Claims checked: SPIN's weak-perspective camera and its inverse, SPIN's normalised projection,
pinhole project/unproject/transform against numpy, SPIN's estimate_translation (exact on noise-free
data, equal to SPIN's numpy normal equations), and ImpHMR's view camera: R_y, rays at φ = 0 and
π/2, periodicity, the world -> camera-φ map, and rotating ground truth to φ and back."""
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from imphmr_jax import geometry
from smpl_jax.rotations import axis_angle_to_matrix as _aa_to_m

# Tests call jitted functions: eager mode compiles every primitive separately and is far slower.
_STATIC = {"intrinsics": (1, 2), "pixel_centers": (0, 1), "camera_rays": (1, 2),
           "view_rays": (1, 2), "rescale_intrinsics": (1, 2), "giraffe_grid": (0,)}
geo = SimpleNamespace(**{
    name: jax.jit(fn, static_argnums=_STATIC.get(name, ()))
    for name, fn in vars(geometry).items() if callable(fn) and not isinstance(fn, type)
})
geo.ViewCameraConfig = geometry.ViewCameraConfig
axis_angle_to_matrix = jax.jit(_aa_to_m)

CFG = geo.ViewCameraConfig()
RNG = np.random.default_rng(0)


def _body(n=24, batch=(4,)):
    """Joints of a ~1.7 m body near the origin, metres."""
    return RNG.uniform([-0.4, -0.9, -0.2], [0.4, 0.8, 0.2], size=batch + (n, 3)).astype(np.float32)


# --------------------------------------------------------------------------- camera.py
def test_weak_perspective_round_trip():
    cam = np.stack([RNG.uniform(0.3, 1.5, 16), RNG.normal(0, 0.2, 16), RNG.normal(0, 0.2, 16)], -1)
    t = geo.weak_perspective_to_translation(jnp.asarray(cam, jnp.float32))
    np.testing.assert_allclose(t[:, 2], 2 * 5000.0 / (224 * cam[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(t[:, :2], cam[:, 1:], rtol=1e-6)
    np.testing.assert_allclose(geo.translation_to_weak_perspective(t), cam, rtol=1e-6, atol=1e-7)


def test_normalized_projection_exact_on_hand_computed_point():
    x = geo.perspective_projection_normalized(jnp.array([[[0.1, -0.2, 1.0]]]), jnp.array([[0.1, 0.0, 49.0]]))
    # f·(X+t)/(Z+tz)/(res/2) = 5000·(0.2, -0.2)/50/112
    np.testing.assert_allclose(x[0, 0], [100 / 560, -100 / 560], rtol=1e-6)


def test_normalized_projection_is_weak_perspective_for_a_distant_body():
    joints = _body()
    cam = np.array([[0.05, 0.1, -0.2]] * 4, np.float32)  # s = 0.05 -> tz ≈ 893 m
    x = geo.perspective_projection_normalized(joints, geo.weak_perspective_to_translation(cam))
    expected = cam[:, None, :1] * (joints[..., :2] + cam[:, None, 1:])
    np.testing.assert_allclose(x, expected, atol=2e-4 * np.abs(expected).max())


def test_project_unproject_round_trip_and_optical_axis():
    k = geo.intrinsics(jnp.array([500.0, 700.0]), 120, 160)
    np.testing.assert_allclose(k[1], [700, 700, 80, 60])
    pts = _body(batch=(2,)) + np.array([0, 0, 4.0], np.float32)
    uv, z = geo.project(pts, k)
    np.testing.assert_allclose(z, pts[..., 2])
    np.testing.assert_allclose(geo.unproject(uv, z, k), pts, rtol=1e-5, atol=1e-6)
    axis_uv, _ = geo.project(jnp.array([[0.0, 0.0, 3.0]]), k[0])
    np.testing.assert_allclose(axis_uv[0], [80, 60])


def test_rescaled_spin_intrinsics_match_silhouette_camera():
    k = geo.rescale_intrinsics(geo.spin_intrinsics(), 224, 128)
    np.testing.assert_allclose(k, [5000 * 128 / 224] * 2 + [64, 64], rtol=1e-6)
    # The same 3D point lands on the same relative image position at both resolutions.
    p = jnp.array([[0.3, -0.2, 20.0]])
    uv224, _ = geo.project(p, geo.spin_intrinsics())
    uv128, _ = geo.project(p, k)
    np.testing.assert_allclose(uv128 / 128, uv224 / 224, rtol=1e-6)


def test_pixel_centers_and_camera_rays_hit_their_pixels():
    k = geo.intrinsics(100.0, 3, 5)
    uv = geo.pixel_centers(3, 5)
    np.testing.assert_allclose(uv[2, 4], [4.5, 2.5])
    rays = geo.camera_rays(k, 3, 5)
    assert rays.shape == (3, 5, 3)
    back, _ = geo.project(2.0 * rays.reshape(1, 15, 3), k)
    np.testing.assert_allclose(back.reshape(3, 5, 2), uv, atol=1e-4)


def test_transform_matches_numpy():
    rot = Rotation.random(3, random_state=1).as_matrix().astype(np.float32)
    t = RNG.normal(size=(3, 3)).astype(np.float32)
    pts = _body(n=7, batch=(3,))
    expected = np.einsum("bij,bnj->bni", rot, pts) + t[:, None]
    np.testing.assert_allclose(geo.transform(pts, rot, t), expected, rtol=1e-5, atol=1e-5)


def _estimate_translation_np(s, kp, f=5000.0, res=224):
    """SPIN's utils/geometry.py estimate_translation_np, float64, one sample."""
    n = s.shape[0]
    center = np.array([res / 2.0, res / 2.0])
    z = np.reshape(np.tile(s[:, 2], (2, 1)).T, -1)
    xy = np.reshape(s[:, :2], -1)
    o, ff = np.tile(center, n), np.tile([f, f], n)
    weight2 = np.reshape(np.tile(np.sqrt(kp[:, 2]), (2, 1)).T, -1)
    q = np.array([ff * np.tile([1, 0], n), ff * np.tile([0, 1], n), o - np.reshape(kp[:, :2], -1)]).T
    c = (np.reshape(kp[:, :2], -1) - o) * z - ff * xy
    w = np.diagflat(weight2)
    q, c = w @ q, w @ c
    return np.linalg.solve(q.T @ q, q.T @ c)


def test_estimate_translation_recovers_known_translation():
    joints = _body(batch=(5,))
    t_true = np.stack([RNG.normal(0, 0.2, 5), RNG.normal(0, 0.2, 5), RNG.uniform(20, 60, 5)], -1)
    uv, _ = geo.project(jnp.asarray(joints + t_true[:, None], jnp.float32), geo.spin_intrinsics())
    conf = np.ones((5, 24, 1), np.float32)
    conf[:, :3] = 0.0  # unlabelled joints are ignored...
    uv = np.asarray(uv).copy()
    uv[:, :3] = 1e4  # ...whatever their coordinates
    t = geo.estimate_translation(joints, np.concatenate([uv, conf], -1))
    np.testing.assert_allclose(t, t_true, rtol=2e-4, atol=2e-4)


def test_estimate_translation_matches_spin_numpy_with_confidences():
    joints = _body(batch=(3,))
    kp = np.concatenate([RNG.uniform(40, 180, (3, 24, 2)), RNG.uniform(0, 1, (3, 24, 1))], -1)
    expected = np.stack([_estimate_translation_np(joints[b].astype(np.float64), kp[b]) for b in range(3)])
    t = geo.estimate_translation(joints, kp.astype(np.float32))
    np.testing.assert_allclose(t, expected, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- views.py
PHIS = jnp.array([0.0, 0.4, np.pi / 2, 2.5, -1.0, 2 * np.pi - 1e-3])


def test_R_y_is_the_rotation_about_y_and_inverts_with_minus_phi():
    r = geo.R_y(PHIS)
    np.testing.assert_allclose(r @ jnp.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.det(r), 1.0, atol=1e-6)
    np.testing.assert_allclose(r @ geo.R_y(-PHIS), np.broadcast_to(np.eye(3), r.shape), atol=1e-6)
    aa = jnp.stack([jnp.zeros_like(PHIS), PHIS, jnp.zeros_like(PHIS)], -1)
    np.testing.assert_allclose(r, axis_angle_to_matrix(aa), atol=1e-6)


def test_rotating_ground_truth_by_phi_then_minus_phi_is_identity():
    b = PHIS.shape[0]
    go_aa = jnp.asarray(Rotation.random(b, random_state=2).as_rotvec() * 0.9, jnp.float32)  # angles < π
    pts, root = _body(batch=(b,)), jnp.asarray(RNG.normal(size=(b, 3)), jnp.float32)
    pose_aa = jnp.asarray(RNG.normal(0, 0.5, (b, 24, 3)), jnp.float32)
    go_m, pose_m = axis_angle_to_matrix(go_aa), axis_angle_to_matrix(pose_aa)

    @jax.jit
    def there_and_back(phi):
        out = {}
        for name, x, fn in (("go_aa", go_aa, geometry.rotate_global_orient),
                            ("go_m", go_m, geometry.rotate_global_orient),
                            ("pose_aa", pose_aa, geometry.rotate_pose),
                            ("pose_m", pose_m, geometry.rotate_pose),
                            ("pts", pts, lambda p, f: geometry.rotate_points(p, f, root))):
            out[name] = fn(x, phi)
            out[name + "_back"] = fn(out[name], -phi)
        return out

    out = there_and_back(PHIS)
    for name, x in (("go_aa", go_aa), ("go_m", go_m), ("pose_aa", pose_aa), ("pose_m", pose_m),
                    ("pts", pts)):
        np.testing.assert_allclose(out[name + "_back"], x, atol=1e-5, err_msg=name)
    r = geo.R_y(PHIS)
    np.testing.assert_allclose(out["go_m"], r @ go_m, atol=1e-6)
    np.testing.assert_allclose(out["pts"] - root[:, None], jnp.einsum("bij,bnj->bni", r, pts - root[:, None]), atol=1e-5)
    np.testing.assert_array_equal(out["pose_aa"][:, 1:], pose_aa[:, 1:])
    np.testing.assert_array_equal(out["pose_m"][:, 1:], pose_m[:, 1:])
    np.testing.assert_allclose(out["pose_m"][:, 0], axis_angle_to_matrix(out["pose_aa"][:, 0]), atol=1e-5)
    np.testing.assert_allclose(axis_angle_to_matrix(out["go_aa"]), r @ go_m, atol=1e-5)


def test_phi_and_phi_plus_two_pi_agree():
    a, b = geo.view_rays(PHIS, 4, 4), geo.view_rays(PHIS + 2 * np.pi, 4, 4)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=2e-5)
    np.testing.assert_allclose(geo.R_y(PHIS), geo.R_y(PHIS + 2 * np.pi), atol=2e-6)


def test_input_view_central_ray_and_side_view():
    rays = geo.view_rays(jnp.array([0.0, np.pi / 2]), 3, 5)
    centre_pixel = 1 * 5 + 2  # row-major
    np.testing.assert_allclose(rays.origins[0, centre_pixel], [0, 0, -CFG.radius], atol=1e-6)
    np.testing.assert_allclose(rays.directions[0, centre_pixel], [0, 0, 1], atol=1e-6)
    # Row 0 is the top of the image: v = -1 there, i.e. y (down) negative.
    np.testing.assert_allclose(rays.directions[0, 0], [-1 / CFG.focal, -1 / CFG.focal, 1], rtol=1e-6)
    # φ = π/2: camera at R_y(π/2)^T (0,0,-r) = (r, 0, 0), looking back at the origin along -x.
    np.testing.assert_allclose(rays.origins[1, centre_pixel], [CFG.radius, 0, 0], atol=1e-6)
    np.testing.assert_allclose(rays.viewdirs[1, centre_pixel], [-1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(rays.viewdirs, axis=-1), 1.0, atol=1e-6)


def test_body_points_map_into_view_phi_as_R_y_X_plus_radius():
    rays = geo.view_rays(PHIS, 4, 4)
    to_cam = lambda p: geo.transform(p, geo.R_y(PHIS), jnp.broadcast_to(jnp.array([0, 0, CFG.radius]), (6, 3)))
    np.testing.assert_allclose(to_cam(rays.origins), 0.0, atol=1e-5)
    d_cam = geo.transform(rays.directions, geo.R_y(PHIS), jnp.zeros((6, 3)))
    canonical = geo.view_rays(jnp.zeros(()), 4, 4).directions
    np.testing.assert_allclose(d_cam, jnp.broadcast_to(canonical, d_cam.shape), atol=1e-6)
    # A ray point at depth d lies at camera-space depth d: the body frame and camera φ agree.
    pts = rays.origins + 3.0 * rays.directions
    np.testing.assert_allclose(geo.world_to_view(pts, PHIS)[..., 2], 3.0, atol=1e-5)


def test_ray_shapes_per_sample_and_per_view():
    assert all(x.shape == (6, 8, 3) for x in geo.view_rays(PHIS, 2, 4))
    assert all(x.shape == (3, 2, 1, 3) for x in geo.view_rays(PHIS.reshape(3, 2), 1, 1))
    np.testing.assert_allclose(geo.giraffe_grid(4), [-1, -1 / 3, 1 / 3, 1], atol=1e-7)


def test_gradients_wrt_phi_are_finite_and_match_finite_differences():
    pts, root = jnp.asarray(_body(batch=(1,))[0]), jnp.array([0.1, 0.2, 0.0])

    def sums(phi):  # rays, rotated points, and a global orientation rotated from the identity
        r = geometry.view_rays(phi, 4, 4)
        return jnp.stack([
            jnp.sum(r.origins * r.directions) + jnp.sum(r.viewdirs[..., 0]),
            jnp.sum(geometry.rotate_points(pts, phi, root) ** 2 * jnp.arange(3.0)),
            jnp.sum(geometry.rotate_global_orient(jnp.zeros(3), phi)),
        ])

    phi, h = jnp.array([0.0, 1.3, 3.0]), 1e-2
    g = jax.jit(jax.vmap(jax.jacrev(sums)))(phi)
    value = jax.jit(jax.vmap(sums))
    fd = (value(phi + h) - value(phi - h)) / (2 * h)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, fd, rtol=2e-2, atol=2e-2)
