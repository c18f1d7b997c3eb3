"""Crop/augmentation/label transforms of imphmr_jax.data.augment against independent truth:
markers drawn at keypoints must be found at the transformed keypoints, rotated 3D joints projected
through the crop camera must land on the crop keypoints, SMPL forward must agree with the rotated
root, flips are involutions, and the SPIN parameter distributions hold."""
import io

import numpy as np
import pytest
from PIL import Image

from imphmr_jax.data import augment as A
from imphmr_jax.data import schema
from smpl_jax import joint_sets

RES = 64
NO_AUG = dict(flip_prob=0.0, noise_factor=0.0, rot_zero_prob=1.0, scale_factor=0.0)


def encode(img, fmt="PNG", **kw):
    b = io.BytesIO()
    Image.fromarray(img).save(b, fmt, **kw)
    return b.getvalue()


def denormalize(img):
    return (img * schema.IMG_NORM_STD + schema.IMG_NORM_MEAN) * 255.0


def marker_record(size=(160, 200), points=((70.5, 60.5), (120.5, 90.5), (95.5, 40.5)),
                  half=3, center=(100.0, 80.0), scale=0.6, fmt="PNG"):
    """Black image with one bright square per point, in channel k for point k; keypoints 25+k."""
    h, w = size
    img = np.zeros((h, w, 3), np.uint8)
    kp = np.zeros((49, 3), np.float32)
    for k, (x, y) in enumerate(points):
        j, i = int(np.floor(x)), int(np.floor(y))  # pixel whose centre is (j + .5, i + .5)
        img[i - half:i + half + 1, j - half:j + half + 1, k] = 255
        kp[25 + k] = [j + 0.5, i + 0.5, 1.0]
    return schema.empty_record(image=encode(img, fmt), center=center, scale=scale, keypoints_2d=kp)


def centroid(channel):
    w = np.clip(channel - 20.0, 0, None)
    ys, xs = np.mgrid[:channel.shape[0], :channel.shape[1]]
    return np.array([(w * (xs + 0.5)).sum(), (w * (ys + 0.5)).sum()]) / w.sum()


def test_crop_transform_geometry():
    a = A.crop_transform([50.0, 40.0], 0.5, RES)  # box side 100 -> 64
    np.testing.assert_allclose(A.apply_affine(a, [[50, 40], [0, -10], [100, 90]]),
                               [[32, 32], [0, 0], [64, 64]], atol=1e-9)
    r = A.crop_transform([50.0, 40.0], 0.5, RES, rot_deg=90.0)
    # +90 deg = counter-clockwise on screen: a point right of the centre goes straight up (y down).
    np.testing.assert_allclose(A.apply_affine(r, [60, 40]), [32, 32 - 6.4], atol=1e-9)
    np.testing.assert_allclose(A.apply_affine(A.invert_affine(r), A.apply_affine(r, [3, 7])),
                               [3, 7], atol=1e-9)
    with pytest.raises(ValueError, match="scale"):
        A.crop_transform([0, 0], 0.0, RES)


def test_flip_twice_is_identity():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (5, 7, 3)).astype(np.uint8)
    kp, j3, pose = rng.normal(size=(49, 3)), rng.normal(size=(24, 4)), rng.normal(size=72)
    np.testing.assert_array_equal(A.flip_image(A.flip_image(img)), img)
    np.testing.assert_array_equal(A.flip_keypoints_2d(A.flip_keypoints_2d(kp)), kp)
    np.testing.assert_array_equal(A.flip_joints_3d(A.flip_joints_3d(j3)), j3)
    np.testing.assert_array_equal(A.flip_pose(A.flip_pose(pose)), pose)
    # and a single flip changes every label
    assert not np.allclose(A.flip_pose(pose), pose)


def test_flip_pose_is_mirror_of_rotation():
    """flip_pose's root = F·R·F (F = diag(-1, 1, 1)) as rotation matrices: a second computation."""
    from scipy.spatial.transform import Rotation
    pose = np.random.default_rng(1).normal(0, 0.8, 72)
    F = np.diag([-1.0, 1.0, 1.0])
    flipped = A.flip_pose(pose)
    for j in range(24):
        src = joint_sets.SMPL_POSE_FLIP_PERM[3 * j] // 3
        want = F @ Rotation.from_rotvec(pose[3 * src:3 * src + 3]).as_matrix() @ F
        np.testing.assert_allclose(Rotation.from_rotvec(flipped[3 * j:3 * j + 3]).as_matrix(),
                                   want, atol=1e-10)


def _marker_check(cfg, seed, tol, fmt="PNG", **rec_kw):
    rec = marker_record(fmt=fmt, **rec_kw)
    out = A.process_record(rec, cfg, np.random.default_rng(seed), train=True, res=RES)
    params = A.sample_aug_params(cfg, np.random.default_rng(seed), RES)
    img = denormalize(out["image"])
    kp = out["keypoints_2d"]
    for k in range(3):  # marker k is in channel k at source keypoint 25 + k
        j = 25 + k
        if params.flip:
            j = joint_sets.J49_FLIP_PERM.index(j)  # where keypoint 25 + k went
        want = (kp[j, :2] + 1.0) * RES / 2.0
        np.testing.assert_allclose(centroid(img[..., k]), want, atol=tol)
    return params


def test_marker_follows_keypoint_with_flip():
    cfg = A.AugmentConfig(**dict(NO_AUG, flip_prob=1.0))
    params = _marker_check(cfg, 0, tol=0.3)
    assert params.flip and params.rot == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_marker_follows_keypoint_with_rotation_and_scale(seed):
    cfg = A.AugmentConfig(flip_prob=0.5, noise_factor=0.0, rot_zero_prob=0.0, scale_factor=0.25)
    params = _marker_check(cfg, seed, tol=0.35)
    assert params.rot != 0.0 and params.sc != 1.0


def test_jpeg_shrink_decoding_keeps_labels():
    """A box 4x larger than the crop: the JPEG is decoded at 1/4 size and warped; markers still
    land on the keypoints, and the crop matches the full-resolution decode."""
    cfg = A.AugmentConfig(**NO_AUG)
    pts = ((150.5, 170.5), (330.5, 260.5), (250.5, 120.5))
    kw = dict(size=(400, 480), points=pts, half=9, center=(240.0, 200.0), scale=1.28)
    _marker_check(cfg, 0, tol=0.4, fmt="JPEG", **kw)
    rec = marker_record(fmt="JPEG", **kw)
    a = A.process_record(rec, cfg, np.random.default_rng(0), res=RES)["image"]
    b = A.process_record(rec, cfg, np.random.default_rng(0), res=RES, shrink_jpeg=False)["image"]
    assert np.abs(denormalize(a) - denormalize(b)).mean() < 6.0


def _camera_record(seed):
    rng = np.random.default_rng(seed)
    h, w = 240, 320
    K = np.array([600.0, 600.0, 170.0, 110.0])
    j3 = np.concatenate([rng.normal(0, 0.4, (24, 3)) + [0.1, -0.2, 5.0], np.ones((24, 1))], 1)
    uv = K[:2] * j3[:, :2] / j3[:, 2:3] + K[2:]
    kp = np.zeros((49, 3))
    kp[25:, :2], kp[25:, 2] = uv, 1.0
    kp[:25, :2], kp[:25, 2] = rng.uniform(0, 300, (25, 2)), 0.5
    img = rng.integers(0, 255, (h, w, 3)).astype(np.uint8)
    rec = schema.empty_record(image=encode(img), center=uv.mean(0), scale=0.9, keypoints_2d=kp,
                              joints_3d=j3, intrinsics=K, pose=rng.normal(0, 0.5, 72),
                              has_pose_3d=1)
    return rec, K


@pytest.mark.parametrize("seed", [0, 3, 4, 5])
def test_rotated_joints_project_onto_crop_keypoints(seed):
    """K'(R·X) = A(K(X)): the augmented joints_3d seen through the crop camera (source intrinsics
    composed with the crop affine, mirrored principal point when flipped) are the crop keypoints."""
    import jax.numpy as jnp
    from imphmr_jax.geometry import camera

    rec, K = _camera_record(seed)
    cfg = A.AugmentConfig(rot_zero_prob=0.0)
    out = A.process_record(rec, cfg, np.random.default_rng(seed), train=True, res=RES)
    p = A.sample_aug_params(cfg, np.random.default_rng(seed), RES)
    assert p.rot != 0.0
    affine = A.crop_transform(rec["center"], float(rec["scale"]) * p.sc, RES, p.rot)
    K_crop, R = A.crop_camera(K, affine)
    np.testing.assert_allclose(R, A.rot_z(p.rot), atol=1e-12)
    if p.flip:
        K_crop[2] = RES - K_crop[2]
    uv, _ = camera.project(jnp.asarray(out["joints_3d"][:, :3], jnp.float32), jnp.asarray(K_crop, jnp.float32))
    want = (out["keypoints_2d"][25:, :2] + 1.0) * RES / 2.0
    np.testing.assert_allclose(np.asarray(uv), want, atol=2e-3)
    np.testing.assert_array_equal(out["joints_3d"][:, 3], 1.0)


def test_pose_root_rotation_matches_smpl_joints():
    """SMPL joints of the root-rotated pose = R_z(-rot)·(joints of the original pose), about the
    root joint (SMPL rotates about its root)."""
    import jax.numpy as jnp
    import smpl_jax

    body = smpl_jax.load("default-small")
    pose = np.random.default_rng(2).normal(0, 0.4, 72).astype(np.float32)
    rot = 37.0
    new = A.rotate_pose(pose, rot)
    np.testing.assert_array_equal(new[3:], pose[3:])
    betas = jnp.zeros((2, 10))
    j = np.asarray(smpl_jax.forward(body, jnp.asarray(np.stack([pose, new])).reshape(2, 24, 3),
                                    betas).joints, np.float64)
    a, b = j[0, :24] - j[0, :1], j[1, :24] - j[1, :1]
    np.testing.assert_allclose(b, a @ A.rot_z(rot).T, atol=2e-5)
    # and process_record rotates root and joints_3d by the same R
    rec, _ = _camera_record(1)
    cfg = A.AugmentConfig(**dict(NO_AUG, rot_zero_prob=0.0))
    out = A.process_record(rec, cfg, np.random.default_rng(7), res=RES)
    p = A.sample_aug_params(cfg, np.random.default_rng(7), RES)
    np.testing.assert_allclose(out["pose"], A.rotate_pose(rec["pose"], p.rot), atol=1e-6)
    np.testing.assert_allclose(out["joints_3d"][:, :3], rec["joints_3d"][:, :3] @ A.rot_z(p.rot).T,
                               atol=1e-5)


def test_colour_noise_within_bounds_and_clipped():
    grey = np.full((8, 8, 3), 128, np.uint8)
    white = np.full((8, 8, 3), 250, np.uint8)
    rec = schema.empty_record(image=encode(np.concatenate([grey, white], 1)), center=[8, 4],
                              scale=16 / 200)
    cfg = A.AugmentConfig(flip_prob=0.0, rot_zero_prob=1.0, scale_factor=0.0)
    gains = []
    for s in range(40):
        img = denormalize(A.process_record(rec, cfg, np.random.default_rng(s), res=16)["image"])
        g = img[8, 2] / 128.0  # a grey pixel well inside (image rows are crop rows 4..12)
        gains.append(g)
        assert np.all(img[8, 12] <= 255.0 + 1e-3)  # bright side clipped
        np.testing.assert_allclose(img[6:10, 1:5], np.broadcast_to(g * 128, (4, 4, 3)), atol=1e-3)
    gains = np.array(gains)
    assert gains.min() >= 0.6 - 1e-4 and gains.max() <= 1.4 + 1e-4
    assert gains.max() > 1.3 and gains.min() < 0.7  # the whole range is used
    assert np.std(gains[:, 0] - gains[:, 1]) > 0.1  # channels independent


def test_normalisation_values():
    rec_w = schema.empty_record(image=encode(np.full((4, 4, 3), 255, np.uint8)), center=[2, 2],
                                scale=0.02)
    rec_b = schema.empty_record(image=encode(np.zeros((4, 4, 3), np.uint8)), center=[2, 2],
                                scale=0.02)
    w = A.process_record(rec_w, train=False, res=4)["image"]
    b = A.process_record(rec_b, train=False, res=4)["image"]
    np.testing.assert_allclose(w[1, 1], (1 - schema.IMG_NORM_MEAN) / schema.IMG_NORM_STD, rtol=1e-5)
    np.testing.assert_allclose(b[1, 1], -schema.IMG_NORM_MEAN / schema.IMG_NORM_STD, rtol=1e-5)


def test_eval_mode_identity_crop_and_outside_keypoints():
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    kp = np.zeros((49, 3), np.float32)
    kp[0] = [16.0, 16.0, 1.0]
    kp[1] = [-40.0, 100.0, 0.7]  # far outside: kept, not zeroed
    rec = schema.empty_record(image=encode(img), center=[16, 16], scale=32 / 200, keypoints_2d=kp)
    out = A.process_record(rec, train=False, res=32)
    # 1:1 resampling (the float32 scale 0.16 makes the zoom 1 - 4e-8: Pillow may round 1 level down)
    np.testing.assert_allclose(denormalize(out["image"]), img, atol=1.0 + 1e-3)
    np.testing.assert_allclose(out["keypoints_2d"][0], [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(out["keypoints_2d"][1], [-3.5, 5.25, 0.7], atol=1e-6)


def test_aug_param_distributions():
    cfg = A.AugmentConfig()
    n = 3000
    ps = [A.sample_aug_params(cfg, np.random.default_rng(s), RES) for s in range(n)]
    flips = np.mean([p.flip for p in ps])
    rots = np.array([p.rot for p in ps])
    scs = np.array([p.sc for p in ps])
    assert abs(flips - 0.5) < 3 * np.sqrt(0.25 / n)
    zero = np.mean(rots == 0.0)
    assert abs(zero - 0.6) < 3 * np.sqrt(0.24 / n)
    assert np.abs(rots).max() <= 60.0 and np.abs(rots).max() > 50.0
    assert scs.min() >= 0.75 and scs.max() <= 1.25 and abs(np.mean(scs) - 1.0) < 0.02
    assert all(p.occluder is None and p.blur is None for p in ps)


def test_optional_occluder_and_blur():
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = 200
    rec = schema.empty_record(image=encode(img), center=[16, 16], scale=32 / 200)
    base = dict(NO_AUG)
    plain = A.process_record(rec, A.AugmentConfig(**base), np.random.default_rng(0), res=32)
    occ = A.process_record(rec, A.AugmentConfig(**base, occlusion_prob=1.0),
                           np.random.default_rng(0), res=32)
    p = A.sample_aug_params(A.AugmentConfig(**base, occlusion_prob=1.0), np.random.default_rng(0), 32)
    x0, y0, w, h = p.occluder[:4]
    changed = np.any(np.abs(occ["image"] - plain["image"]) > 1e-4, axis=-1)
    assert changed[y0:y0 + h, x0:x0 + w].mean() > 0.9 and changed.sum() <= w * h
    blur = A.motion_blur(np.asarray(denormalize(plain["image"])), 5, 0.0)
    # horizontal length-5 box: column 15 averages columns 13..17 (2 of 5 bright), 16 averages 14..18
    np.testing.assert_allclose(blur[:, 15], np.full((32, 3), 2 * 200 / 5.0), atol=0.5)
    np.testing.assert_allclose(blur[:, 16], np.full((32, 3), 3 * 200 / 5.0), atol=0.5)
    np.testing.assert_allclose(blur[:, :10], 0.0, atol=0.05)


def test_bad_inputs_name_the_field():
    rec = schema.empty_record(image=b"not an image", center=[1, 1], scale=1.0)
    with pytest.raises(ValueError, match="'image'"):
        A.process_record(rec, train=False)
    rec = schema.empty_record(center=[1, 1], scale=1.0)
    with pytest.raises(ValueError, match="'image'"):
        A.process_record(rec, train=False)
    with pytest.raises(ValueError, match="Generator"):
        A.process_record(rec, train=True)
    with pytest.raises(ValueError, match="keypoints"):
        A.flip_keypoints_2d(np.zeros((24, 3)))
