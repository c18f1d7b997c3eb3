"""synthetic_humans/multiview_video and the People loader: each person moves through a clip seen by
a fixed, calibrated ring of cameras; every label agrees with a recomputation from the stored world
SMPL and cameras; the procedural texture is a function of the canonical surface point only (so a
person looks the same in every frame and view) and has local detail; the test split holds other
people; the loader groups a built split by person and draws cross-pose references."""
import dataclasses
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

import smpl_jax
from imphmr_jax.data import builders, schema
from imphmr_jax.data import multiview_video as mvv
from imphmr_jax.data import synthetic as S
from imphmr_jax.data.synthetic import multiview_video as gen
from imphmr_jax.data.synthetic import renderer, texture
from imphmr_jax.data.synthetic.video import sample_clip
from imphmr_jax.render import rasterize

SIZE, PEOPLE, FRAMES, VIEWS, BATCH = 48, 2, 3, 3, 9
CFG = S.SyntheticConfig(image_size=SIZE, body="default-small", seed=2,
                        **S.MULTIVIEW_VIDEO_DEFAULTS)
# Light = albedo (ambient 1, no diffuse, no person grain), lossless: the image is the texture.
FLAT_LIGHT = dataclasses.replace(CFG, light_ambient_range=(1.0, 1.0),
                                 light_diffuse_range=(0.0, 0.0), grain_range=(0.0, 0.0),
                                 image_format="png")


def _generate(cfg, split="train", people=PEOPLE):
    return list(gen.generate_multiview_video(cfg, split, people, FRAMES, VIEWS, batch_size=BATCH,
                                             progress=False))


def _decode(data):
    return np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))


@pytest.fixture(scope="module")
def model():
    return smpl_jax.load(CFG.body)


@pytest.fixture(scope="module")
def recs():
    return _generate(CFG)


_FORWARD = jax.jit(smpl_jax.forward)


def _forward(model, pose, betas):
    """Vertices (N, V, 3) float64 of (N, 72) poses and (N, 10) betas, in chunks of BATCH (one
    compiled program)."""
    out = []
    for s in range(0, len(pose), BATCH):
        rows = np.arange(s, s + BATCH).clip(max=len(pose) - 1)
        v = _FORWARD(model, jnp.asarray(pose[rows].reshape(-1, 24, 3)), jnp.asarray(betas[rows]))
        out.append(np.asarray(v.vertices, np.float64)[: min(BATCH, len(pose) - s)])
    return np.concatenate(out)


def _world(model, recs):
    """World vertices (N, V, 3) from the records' pose_world, betas and transl_world."""
    stack = lambda k: np.stack([r[k] for r in recs])  # noqa: E731
    return _forward(model, stack("pose_world"), stack("betas")) + stack("transl_world")[:, None]


@jax.jit
def _recompute(model, verts_cam, intr, region_weights, colors, tex, flat_vertex_colors):
    """From camera-frame vertices (B, V, 3) and intrinsics (B, 4): the silhouette (B, S, S), the
    interior (mask pixels whose 4 neighbours are in the mask), the procedural albedo of the
    canonical point and region weights of each pixel (texture (B, ...), colours (B, 7, 3)), and
    the flat albedo of the per-vertex colours (B, V, 3); albedos in 0..255."""
    faces = model.faces
    frags = rasterize.rasterize(verts_cam, faces, intr, SIZE, SIZE, near=0.05, max_tiles=8192)
    points = texture.canonical_points(frags, model.v_template, faces)
    rw = rasterize.interpolate(frags, jnp.broadcast_to(region_weights, (verts_cam.shape[0],)
                                                       + region_weights.shape), faces)
    tex_albedo = texture.albedo(points, rw, colors, tex) * 255
    flat_albedo = rasterize.interpolate(frags, flat_vertex_colors, faces) * 255
    m = frags.mask
    interior = m
    for axis in (1, 2):  # away from the silhouette (two forward paths may differ by a pixel)
        interior = interior & jnp.roll(m, 1, axis) & jnp.roll(m, -1, axis)
    return m, interior, tex_albedo, flat_albedo


def _appearance(cfg, p):
    return sample_clip(cfg, gen.motion_split("train"), p, FRAMES).appearance


def _recomputed(model, recs, appearance_of):
    """_recompute over the records in chunks of BATCH, with ``appearance_of(record)``'s colours
    and texture; numpy (mask, interior, procedural albedo, flat albedo)."""
    rend = renderer.get_renderer(CFG.body)
    wv = _world(model, recs)
    outs = []
    for s in range(0, len(recs), BATCH):
        rows = np.arange(s, s + BATCH).clip(max=len(recs) - 1)
        sub = [recs[i] for i in rows]
        ext = np.stack([r["extrinsics"] for r in sub]).astype(np.float64)
        cam = np.einsum("nij,nvj->nvi", ext[:, :, :3], wv[rows]) + ext[:, None, :, 3]
        apps = [appearance_of(r) for r in sub]
        colors = np.stack([a.region_colors for a in apps])
        tex = texture.Texture(*[np.stack(x) for x in zip(*[a.texture for a in apps])])
        flat_v = rend.vertex_colors(colors, np.stack([a.stripe for a in apps]),
                                    np.stack([a.stripe_color for a in apps]))
        out = _recompute(model, jnp.asarray(cam, jnp.float32),
                         jnp.asarray(np.stack([r["intrinsics"] for r in sub])),
                         rend.region_weights, jnp.asarray(colors), tex, flat_v)
        outs.append([np.asarray(o)[: min(BATCH, len(recs) - s)] for o in out])
    return [np.concatenate(x) for x in zip(*outs)]


def test_people_move_through_clips_seen_by_a_fixed_ring(recs):
    assert len(recs) == PEOPLE * FRAMES * VIEWS
    order = [(int(r["sequence"]), int(r["frame"]), int(r["view"])) for r in recs]
    assert order == [(p, t, k) for p in range(PEOPLE) for t in range(FRAMES) for k in range(VIEWS)]
    for r in recs:
        schema.validate_record(r, variant=True)
        p, t, k = int(r["sequence"]), int(r["frame"]), int(r["view"])
        name = f"synthetic_multiview_video/train/p{p:06d}_f{t:04d}_v{k:02d}"
        assert r["imgname"] == name.encode()
        assert r["has_smpl"] == 1 and r["has_camera"] == 1 and r["has_mask"] == 1
        assert S.decode_mask(r["mask"]).sum() > 30  # the person is in view
    for p in range(PEOPLE):
        mine = [r for r in recs if r["sequence"] == p]
        for r in mine:
            np.testing.assert_array_equal(r["betas"], mine[0]["betas"])
            same_view = mine[int(r["view"])]  # frame 0, same camera
            np.testing.assert_array_equal(r["extrinsics"], same_view["extrinsics"])
            np.testing.assert_array_equal(r["intrinsics"], same_view["intrinsics"])
        poses = np.stack([mine[t * VIEWS]["pose_world"] for t in range(FRAMES)])
        assert np.abs(np.diff(poses, axis=0)).max() > 1e-3  # it moves ...
        axes = [mine[k]["extrinsics"][2, :3] for k in range(VIEWS)]  # ... seen from a ring
        az = np.sort(np.degrees(np.arctan2([a[0] for a in axes], [a[2] for a in axes])) % 360)
        gaps = np.diff(np.concatenate([az, az[:1] + 360]))
        assert np.all(np.abs(gaps - 360 / VIEWS) < 25)
    assert not np.array_equal(recs[0]["betas"], recs[FRAMES * VIEWS]["betas"])


def test_labels_agree_with_the_stored_world_smpl_and_cameras(model, recs):
    wv = _world(model, recs)
    assert np.all(np.abs(wv[..., 1].min(1)) < 1e-4)  # feet on the ground plane
    stack = lambda k: np.stack([r[k] for r in recs])  # noqa: E731
    cam_v = _forward(model, stack("pose"), stack("betas")) + stack("cam_t")[:, None]
    for r, w, c in zip(recs, wv, cam_v):
        ext = r["extrinsics"].astype(np.float64)
        np.testing.assert_allclose(w @ ext[:, :3].T + ext[:, 3], c, atol=3e-4)
        g = Rotation.from_rotvec(r["pose"][:3]) * Rotation.from_rotvec(r["pose_world"][:3]).inv()
        assert (Rotation.from_matrix(ext[:, :3]).inv() * g).magnitude() < 1e-4
    mask = _recomputed(model, recs, lambda r: _appearance(CFG, int(r["sequence"])))[0]
    for r, m in zip(recs, mask):
        stored = S.decode_mask(r["mask"])
        assert np.sum(stored != m) <= max(2, 0.02 * m.sum())


def test_texture_is_a_function_of_the_canonical_surface_point(model):
    lit = _generate(FLAT_LIGHT, people=1)
    _, interior, own, _ = _recomputed(model, lit, lambda r: _appearance(FLAT_LIGHT, 0))
    _, _, other, _ = _recomputed(model, lit, lambda r: _appearance(FLAT_LIGHT, 1))
    images = np.stack([_decode(r["image"]) for r in lit]).astype(np.float64)
    err = np.abs(images - own)[interior]
    # only the background's grain (at most 0.05 of full scale, uniform) is left
    assert interior.sum() > 100 and err.max() <= 0.05 * 255 + 1.0 and err.mean() < 7.0
    assert np.abs(images - other)[interior].mean() > 3 * err.mean()


def test_procedural_texture_has_local_detail_flat_colours_do_not(model, recs):
    _, interior, tex, flat = _recomputed(model, recs, lambda r: _appearance(CFG,
                                                                            int(r["sequence"])))

    def detail(img):  # mean |image - mean of its 4 neighbours| inside the body
        nb = sum(np.roll(img, s, a) for s in (1, -1) for a in (1, 2)) / 4
        return np.abs(img - nb).sum(-1)[interior].mean()

    assert detail(tex) > 2.0 * detail(flat), (detail(tex), detail(flat))


def test_texture_switch_changes_the_look_only():
    flat = dataclasses.replace(CFG, texture="flat")
    for p in range(3):
        a, b = sample_clip(CFG, "train", p, FRAMES), sample_clip(flat, "train", p, FRAMES)
        assert a.appearance.texture is not None and b.appearance.texture is None
        for name in ("pose_world", "ground", "betas", "times"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert a.appearance.noise_seed == b.appearance.noise_seed
        assert a.azimuth == b.azimuth and a.focal == b.focal
    single = dataclasses.replace(S.SyntheticConfig(image_size=SIZE), texture="procedural")
    s1, s2 = S.sample_scene(single, "train", 4), S.sample_scene(S.SyntheticConfig(image_size=SIZE),
                                                                 "train", 4)
    np.testing.assert_array_equal(s1.pose_body, s2.pose_body)
    np.testing.assert_array_equal(s1.cam_rot, s2.cam_rot)
    assert s1.occluded == s2.occluded and s1.place.tolist() == s2.place.tolist()
    with pytest.raises(ValueError, match="texture"):
        S.SyntheticConfig(texture="plaid")


def test_test_split_holds_other_people_and_same_seed_same_bytes(recs):
    again = _generate(CFG, people=1)
    for a, b in zip(again, recs):
        assert a["image"] == b["image"] and a["mask"] == b["mask"]
        np.testing.assert_array_equal(a["pose"], b["pose"])
    test = _generate(CFG, "test", people=1)
    assert test[0]["imgname"].startswith(b"synthetic_multiview_video/test/")
    assert not any(np.allclose(t["betas"], r["betas"]) for t in test[:1] for r in recs)
    assert test[0]["image"] != recs[0]["image"]


def test_builder_loader_and_cross_pose_triplets(recs, tmp_path):
    data = str(tmp_path / "d")
    people = mvv.load_people(
        "synthetic_humans", builder_config="multiview_video", split="train", data_dir=data,
        build_if_missing=True,
        builder_options={"num_train": PEOPLE, "num_test": 1, "num_frames": FRAMES,
                         "num_views": VIEWS, "image_size": SIZE, "body": CFG.body, "seed": CFG.seed,
                         "batch_size": BATCH})
    src = builders.load_source("synthetic_humans", "train", data, config="multiview_video")
    assert len(src) == len(recs) and len(builders.load_source(
        "synthetic_humans", "test", data, config="multiview_video")) == FRAMES * VIEWS
    assert src[4]["image"] == recs[4]["image"]  # the builder writes the generator's records
    # People: sorted by (person, frame, view), arrays decoded from the records
    n = len(recs)
    assert people.images.shape == (n, SIZE, SIZE, 3) and people.masks.shape == (n, SIZE, SIZE)
    assert people.person_ids.tolist() == list(range(PEOPLE))
    for i in (0, 7, n - 1):
        r = recs[int(people.index[i])]
        np.testing.assert_array_equal(people.images[i], _decode(r["image"]))
        np.testing.assert_array_equal(people.masks[i], S.decode_mask(r["mask"]))
        fx, fy, cx, cy = r["intrinsics"]
        np.testing.assert_allclose(people.K[i], [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        np.testing.assert_allclose(people.R[i], r["extrinsics"][:, :3])
        np.testing.assert_allclose(people.t[i], r["extrinsics"][:, 3])
        np.testing.assert_allclose(people.pose[i], r["pose_world"].reshape(24, 3))
        np.testing.assert_allclose(people.transl[i], r["transl_world"])
        assert (people.person[i], people.frame[i], people.view[i]) == (
            r["sequence"], r["frame"], r["view"])
    # triplets: a target and 2 distinct references of the same person in other frames
    tri = mvv.sample_triplets(np.random.default_rng(3), people, 64, n_refs=2)
    assert tri.shape == (64, 3) and tri.dtype == np.int64
    for row in tri:
        assert len(set(row.tolist())) == 3
        assert np.all(people.person[row] == people.person[row[0]])
        assert people.frame[row[0]] not in people.frame[row[1:]]
    assert len(set(people.view[tri[:, 1]].tolist())) > 1  # other cameras too
    np.testing.assert_array_equal(
        tri, mvv.sample_triplets(np.random.default_rng(3), people, 64, n_refs=2))
    same = mvv.sample_triplets(np.random.default_rng(4), people, 32, n_refs=2, same_camera=True)
    assert np.all(people.view[same[:, 1:]] == people.view[same[:, :1]])
    with pytest.raises(ValueError, match="at most 3 frames"):
        mvv.sample_triplets(np.random.default_rng(0), people, 1, n_refs=7)
    # lazy: the same arrays, decoded when indexed
    lazy = mvv.load_people(src, lazy=True)
    assert lazy.images.shape == people.images.shape and lazy.masks.shape == people.masks.shape
    np.testing.assert_array_equal(lazy.images[tri[:4]], people.images[tri[:4]])
    np.testing.assert_array_equal(lazy.masks[tri[:4]], people.masks[tri[:4]])
    np.testing.assert_array_equal(mvv.resize(lazy, SIZE // 2).K, mvv.resize(people, SIZE // 2).K)
    # resize: area-averaged images, K scaled with the +0.5 pixel centres
    half = mvv.resize(people, SIZE // 2)
    assert half.images.shape == (n, SIZE // 2, SIZE // 2, 3)
    np.testing.assert_allclose(half.K[:, :2], people.K[:, :2] / 2, rtol=1e-6)
    again = mvv.load_people(src, image_size=SIZE // 2, max_records=VIEWS)
    np.testing.assert_allclose(again.K, half.K[:VIEWS], rtol=1e-6)
    meta = builders.build_metadata("synthetic_humans", data, config="multiview_video")
    assert meta["options"]["num_frames"] == FRAMES and meta["options"]["num_views"] == VIEWS


def test_figure_rows_are_frames_columns_are_cameras(recs):
    fig = gen.multiview_video_figure(None, config=CFG, num_views=VIEWS, num_frames=FRAMES,
                                     frames=(0, 1, 2), zoom=2, batch_size=BATCH)
    panel_w = VIEWS * SIZE + (VIEWS + 1) * 2
    assert fig.shape == (3 * SIZE + 4 * 2, panel_w + 2 * (SIZE // 4) + 2, 3)
    np.testing.assert_array_equal(fig[2:2 + SIZE, 2 + SIZE + 2:2 + 2 * SIZE + 2],
                                  _decode(recs[1]["image"]))  # frame 0, camera 1
