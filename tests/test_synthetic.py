"""Synthetic humans: every label agrees with an independent recomputation from the stored SMPL
parameters and cameras (forward pass, projection, rasterization), images show the person where the
mask says, the random streams are deterministic and split-specific, truncation / 2D-only / occluder
options do what they say, multi-view cameras and video clips are consistent and smooth."""
import dataclasses
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

import smpl_jax
from imphmr_jax.data import draw, schema
from imphmr_jax.data import synthetic as S
from imphmr_jax.data.synthetic import renderer
from imphmr_jax.geometry import camera
from imphmr_jax.render import rasterize

SIZE = 64
BATCH = 8
NUM = 24
CFG = S.SyntheticConfig(image_size=SIZE, truncation_prob=0.3, occluder_prob=0.3,
                        fraction_2d_only=0.3, seed=3)
OUT = os.path.join(os.path.dirname(__file__), "_output")


@pytest.fixture(scope="module")
def model():
    return smpl_jax.load(CFG.body)


@pytest.fixture(scope="module")
def batches():
    return list(S.generate_batches(CFG, "train", NUM, batch_size=BATCH))


@pytest.fixture(scope="module")
def records(batches):
    return [r for recs, _, _ in batches for r in recs]


@pytest.fixture(scope="module")
def labelled(model, records):
    """The records with 3D labels and their (vertices, joints) recomputed from those labels."""
    recs = _with_3d(records)
    return recs, _forward(model, recs)


_FORWARD = jax.jit(smpl_jax.forward, static_argnames=("extra_joints",))


def _forward(model, recs):
    """Camera-frame vertices and 73 joints from the records' own pose, betas and cam_t."""
    pose = jnp.asarray(np.stack([r["pose"] for r in recs]).reshape(-1, 24, 3))
    betas = jnp.asarray(np.stack([r["betas"] for r in recs]))
    out = _FORWARD(model, pose, betas, extra_joints=("spin49",))
    cam_t = np.stack([r["cam_t"] for r in recs])[:, None]
    return np.asarray(out.vertices) + cam_t, np.asarray(out.joints) + cam_t


def _with_3d(recs):
    return [r for r in recs if r["has_smpl"] == 1]


def test_records_have_the_schema_layout(records):
    assert len(records) == NUM
    for i, r in enumerate(records):
        schema.validate_record(r)
        assert r["imgname"] == f"synthetic/train/{i:06d}".encode()
        img = Image.open(io.BytesIO(r["image"]))
        assert img.format == "JPEG" and img.size == (SIZE, SIZE) and img.mode == "RGB"
        assert r["gender"] == -1 and r["has_mask"] == 1
    assert S.generate(CFG, "train", 0, progress=False) is not None
    assert list(S.generate(CFG, "train", 0, progress=False)) == []


def test_keypoints_are_projected_joints_3d(records):
    recs = _with_3d(records)
    assert len(recs) >= 5
    for r in recs:
        np.testing.assert_array_equal(r["joints_3d"][:, 3], 1.0)
        uv, z = camera.project(jnp.asarray(r["joints_3d"][:, :3]), jnp.asarray(r["intrinsics"]))
        assert np.all(np.asarray(z) > 0)
        np.testing.assert_allclose(np.asarray(uv), r["keypoints_2d"][25:, :2], atol=1e-2)
        np.testing.assert_allclose(r["intrinsics"][2:], [SIZE / 2, SIZE / 2])
        assert r["has_camera"] == 1


def test_forward_of_stored_pose_plus_cam_t_gives_joints_3d_and_keypoints(labelled):
    recs, (_, joints) = labelled
    for r, j in zip(recs, joints):
        spin = j[24:73]
        np.testing.assert_allclose(spin[25:], r["joints_3d"][:, :3], atol=2e-4)
        intr = r["intrinsics"]
        uv = spin[:, :2] / spin[:, 2:] * intr[:2] + intr[2:]
        np.testing.assert_allclose(uv, r["keypoints_2d"][:, :2], atol=2e-2)
        inside = (uv >= 0).all(1) & (uv < SIZE).all(1) & (spin[:, 2] > 0)
        np.testing.assert_array_equal(r["keypoints_2d"][:, 2], inside.astype(np.float32))


def test_mask_equals_a_fresh_rasterization_of_the_labels(model, labelled):
    recs, (verts, _) = labelled
    intr = np.stack([r["intrinsics"] for r in recs])
    frags = rasterize.rasterize(jnp.asarray(verts), jnp.asarray(model.faces), jnp.asarray(intr),
                                SIZE, SIZE, near=0.05, max_tiles=8192)
    assert int(np.max(np.asarray(frags.overflow))) == 0
    fresh = np.asarray(frags.mask)
    for r, m in zip(recs, fresh):
        stored = S.decode_mask(r["mask"])
        assert stored.shape == (SIZE, SIZE) and stored.any()
        # Same mesh up to float rounding of two forward paths: at most a boundary pixel or two.
        assert np.sum(stored != m) <= max(2, 0.01 * m.sum())


def test_mask_covers_torso_keypoints_and_box_covers_everything(records):
    torso = [25 + i for i in (2, 3, 14, 15, 16)]  # RHip, LHip, Pelvis, Thorax, Spine (H36M)
    for r in records:
        mask = S.decode_mask(r["mask"])
        for j in torso:
            x, y, c = r["keypoints_2d"][j]
            if c > 0:
                i0, j0 = int(y), int(x)
                assert mask[max(i0 - 1, 0):i0 + 2, max(j0 - 1, 0):j0 + 2].any(), (r["imgname"], j)
        half = 100.0 * r["scale"]
        vis = r["keypoints_2d"][r["keypoints_2d"][:, 2] > 0, :2]
        rows, cols = np.nonzero(mask)
        pts = np.concatenate([vis, np.stack([cols + 0.5, rows + 0.5], 1)])
        assert np.all(np.abs(pts - r["center"]) <= half / 1.2 + 1e-3)
        # SPIN's convention: scale = 1.2 * the longer side of the tight box / 200.
        side = max(np.ptp(np.concatenate([pts[:, 0], [cols.min(), cols.max() + 1.0]])),
                   np.ptp(np.concatenate([pts[:, 1], [rows.min(), rows.max() + 1.0]])))
        np.testing.assert_allclose(r["scale"], 1.2 * side / 200, rtol=1e-4)


def test_images_show_the_person_where_the_mask_is(batches):
    for _, out, scenes in batches:
        for k, scene in enumerate(scenes):
            img = out.image[k].astype(int)
            bg = out.background[k].astype(int)
            mask, occ = out.mask[k], out.occluded[k]
            diff = np.abs(img - bg).sum(-1)
            person = mask & ~occ
            assert person.sum() > 20
            assert np.mean(diff[person] > 6) > 0.85
            grain = 255 * (scene.appearance.shade[2] + scene.background.params[6])
            occluder_cover = renderer.paint_shapes(jnp.zeros((1, SIZE, SIZE, 3)),
                                                   jnp.asarray(scene.occluders[None]), SIZE)[1]
            free = ~mask & ~np.asarray(occluder_cover)[0]
            assert np.all(np.abs(img - bg)[free] <= grain + 1.01)
            if not scene.occluded:
                assert not occ.any()


def test_same_seed_same_records_other_split_or_seed_differs(records):
    again = list(S.generate(CFG, "train", 4, batch_size=BATCH, progress=False))
    for a, b in zip(again, records[:4]):
        for name in schema.RECORD_FIELDS:
            if isinstance(a[name], bytes):
                assert a[name] == b[name], name
            else:
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    test = list(S.generate(CFG, "test", 4, batch_size=BATCH, progress=False))
    other = list(S.generate(dataclasses.replace(CFG, seed=4), "train", 4,
                            batch_size=BATCH, progress=False))
    for recs in (test, other):
        for a, b in zip(recs, records[:4]):
            assert a["image"] != b["image"]
            assert not np.allclose(a["keypoints_2d"], b["keypoints_2d"])
    assert test[0]["imgname"] == b"synthetic/test/000000"
    assert S.split_code("train") != S.split_code("test") != S.split_code("validation")


def test_two_d_only_fraction_and_zeroed_labels(records):
    flags = np.array([S.sample_scene(CFG, "train", i).two_d_only for i in range(300)])
    assert abs(flags.mean() - CFG.fraction_2d_only) < 0.08
    two_d = [r for r in records if r["has_smpl"] == 0]
    assert two_d, "the fixture should contain 2D-only samples"
    assert len(two_d) == sum(flags[:NUM])
    for r in two_d:
        assert r["has_pose_3d"] == 0 and r["has_camera"] == 0
        for name in ("pose", "betas", "joints_3d", "cam_t", "intrinsics"):
            assert not np.any(r[name]), name
        assert r["keypoints_2d"][:, 2].sum() > 10 and r["has_mask"] == 1
    for r in records:
        if r["has_smpl"]:
            assert np.any(r["pose"]) and np.any(r["betas"]) and r["has_pose_3d"] == 1
    # The test split is fully labelled; its other draws are unchanged (one random stream).
    test = [S.sample_scene(CFG, "test", i) for i in range(60)]
    assert not any(t.two_d_only for t in test)


def test_truncated_samples_lose_keypoints_others_keep_them(records):
    scenes = [S.sample_scene(CFG, "train", i) for i in range(NUM)]
    trunc = [s.truncated for s in scenes]
    assert any(trunc) and not all(trunc)
    for r, t in zip(records, trunc):
        conf = r["keypoints_2d"][:, 2]
        if t:
            assert (conf == 0).sum() >= 1, r["imgname"]
        else:
            assert (conf == 0).sum() <= 2, r["imgname"]


def _rot_angle(a, b):
    return np.linalg.norm(Rotation.from_matrix(a.T @ b).as_rotvec())


def _check_world_consistency(model, recs):
    pose_w = jnp.asarray(np.stack([r["pose_world"] for r in recs]).reshape(-1, 24, 3))
    betas = jnp.asarray(np.stack([r["betas"] for r in recs]))
    world = smpl_jax.forward(model, pose_w, betas, extra_joints=("spin49",))
    tw = np.stack([r["transl_world"] for r in recs])[:, None]
    wj = np.asarray(world.joints) + tw
    wv = np.asarray(world.vertices) + tw
    _, cam_j = _forward(model, recs)
    for r, j_w, v_w, j_c in zip(recs, wj, wv, cam_j):
        ext = r["extrinsics"]
        rot, t = ext[:, :3].astype(np.float64), ext[:, 3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-5)
        seen = j_w @ rot.T + t
        np.testing.assert_allclose(seen, j_c, atol=3e-4)
        np.testing.assert_allclose(seen[24:73][25:], r["joints_3d"][:, :3], atol=3e-4)
        g_cam = Rotation.from_rotvec(r["pose"][:3]).as_matrix()
        g_w = Rotation.from_rotvec(r["pose_world"][:3]).as_matrix()
        assert _rot_angle(g_cam, rot @ g_w) < 1e-4
        np.testing.assert_allclose(r["pose"][3:], r["pose_world"][3:], atol=1e-6)
        assert abs(v_w[:, 1].min()) < 1e-4  # feet on the ground plane y = 0
    return wj


def test_multiview_cameras_see_the_same_world_pose(model):
    views = 3
    recs = list(S.generate_multiview(CFG, "train", 2, views, batch_size=BATCH, progress=False))
    assert len(recs) == 2 * views
    for r in recs:
        schema.validate_record(r, variant=True)
        assert r["keypoints_2d"][:, 2].sum() >= 45  # the person is framed
        assert r["has_smpl"] == 1 and r["frame"] == 0
    _check_world_consistency(model, recs)
    for p in range(2):
        group = [r for r in recs if r["sequence"] == p]
        assert [r["view"] for r in group] == list(range(views))
        for a in group[1:]:
            np.testing.assert_array_equal(a["pose_world"], group[0]["pose_world"])
            np.testing.assert_array_equal(a["betas"], group[0]["betas"])
            np.testing.assert_array_equal(a["transl_world"], group[0]["transl_world"])
        # cameras spread around the person: optical axes about 360/K degrees apart in azimuth
        axes = [r["extrinsics"][2, :3] for r in group]
        az = np.sort(np.degrees(np.arctan2([a[0] for a in axes], [a[2] for a in axes])) % 360)
        gaps = np.diff(np.concatenate([az, az[:1] + 360]))
        assert np.all(np.abs(gaps - 360 / views) < 25)


@pytest.mark.parametrize("orbit", [0.0, 1.0])
def test_video_moves_smoothly_with_consistent_cameras(model, orbit):
    frames = 12
    cfg = dataclasses.replace(CFG, video_key_interval=6, video_orbit_prob=orbit)
    recs = list(S.generate_video(cfg, "train", 1, frames, batch_size=BATCH, progress=False))
    assert [r["frame"] for r in recs] == list(range(frames))
    assert all(r["sequence"] == 0 and r["view"] == 0 for r in recs)
    wj = _check_world_consistency(model, recs)
    for r in recs[1:]:
        np.testing.assert_array_equal(r["intrinsics"], recs[0]["intrinsics"])
        np.testing.assert_array_equal(r["betas"], recs[0]["betas"])
    step = np.linalg.norm(np.diff(wj[:, :24], axis=0), axis=-1)  # (T-1, 24) m per frame
    assert step.max() < 0.12 and step.mean() < 0.04
    assert np.abs(np.diff(wj[:, :24], axis=0)).sum() > 1e-3  # it does move
    rots = [r["extrinsics"][:, :3].astype(np.float64) for r in recs]
    turn = [_rot_angle(a, b) for a, b in zip(rots[:-1], rots[1:])]
    if orbit:
        max_rate = np.radians(cfg.video_orbit_rate[1]) / cfg.video_fps
        assert 0 < max(turn) < 1.5 * max_rate + 0.02
    else:
        assert max(turn) < 1e-6
        for r in recs[1:]:
            np.testing.assert_array_equal(r["extrinsics"], recs[0]["extrinsics"])
    for r in recs:
        assert r["keypoints_2d"][:, 2].sum() >= 40


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="image_format"):
        S.SyntheticConfig(image_format="gif")
    with pytest.raises(ValueError, match="fraction_2d_only"):
        S.SyntheticConfig(fraction_2d_only=1.5)
    with pytest.raises(ValueError, match="unknown pose families"):
        S.SyntheticConfig(pose_weights=(("dancing", 1.0),))
    with pytest.raises(ValueError, match="fill_range"):
        S.SyntheticConfig(fill_range=(0.9, 0.5))


def test_look_at_rotation_front_view_is_x_pi():
    np.testing.assert_allclose(S.look_at_rotation(0.0, 0.0), np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    rot = S.look_at_rotation(0.4, 0.3, 0.2)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) > 0
    centre = np.array([np.sin(0.4) * np.cos(0.3), np.sin(0.3), np.cos(0.4) * np.cos(0.3)])
    np.testing.assert_allclose(rot @ (-centre), [0, 0, 1], atol=1e-12)  # looks at the origin


def test_figure_grid_of_samples(records):
    tiles = []
    for r in records[:24]:
        img = np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB"))
        tiles.append(draw.draw_keypoints(img, r["keypoints_2d"], box=(r["center"], r["scale"]),
                                         radius=1.0))
        assert not np.array_equal(tiles[-1], img)  # something was drawn
    fig = draw.grid(tiles, 4, 6)
    assert fig.shape == (4 * SIZE + 5 * 2, 6 * SIZE + 7 * 2, 3)
    os.makedirs(OUT, exist_ok=True)
    Image.fromarray(fig).save(os.path.join(OUT, "synthetic_samples.png"))


def test_set_yaw_turns_the_forward_axis_to_the_requested_azimuth():
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(3)
    for _ in range(20):
        root = Rotation.random(random_state=rng.integers(1 << 30))
        yaw = rng.uniform(-np.pi, np.pi)
        new = Rotation.from_rotvec(S.set_yaw(root.as_rotvec(), yaw))
        fwd = new.apply([0.0, 0.0, 1.0])
        old_fwd = root.apply([0.0, 0.0, 1.0])
        assert np.isclose(np.arctan2(np.sin(np.arctan2(fwd[0], fwd[2]) - yaw),
                                     np.cos(np.arctan2(fwd[0], fwd[2]) - yaw)), 0.0, atol=1e-5)
        assert np.isclose(fwd[1], old_fwd[1], atol=1e-6)  # only turned about the vertical


def test_background_clutter_zero_is_a_plain_gradient_with_the_same_draws():
    full = S.sample_background(np.random.default_rng(5), 1.0)
    plain = S.sample_background(np.random.default_rng(5), 0.0)
    assert plain.params[5] == 0.0 and not plain.shapes[:, 6].any()
    np.testing.assert_array_equal(full.colors, plain.colors)
    np.testing.assert_array_equal(np.delete(full.params, 5), np.delete(plain.params, 5))


def test_renderer_cache_is_bounded_and_reused():
    assert renderer.get_renderer.cache_info().maxsize is not None  # no unbounded module cache
    assert renderer.get_renderer(CFG.body) is renderer.get_renderer(CFG.body)


def test_host_projection_stays_float64_numpy():
    # The labels are projected on the host with geometry.camera.project; it must keep numpy
    # float64 inputs numpy float64 (a float32 jax round trip would change stored keypoints).
    pts = np.array([[[0.1, -0.2, 2.0], [0.3, 0.1, 3.0]]])
    uv, z = camera.project(pts, np.array([[100.0, 100.0, 32.0, 32.0]], np.float32))
    assert isinstance(uv, np.ndarray) and uv.dtype == np.float64 and z.dtype == np.float64
    np.testing.assert_array_equal(uv[0, 0], [100.0 * 0.1 / 2.0 + 32.0, 100.0 * -0.2 / 2.0 + 32.0])
