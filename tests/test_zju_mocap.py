"""zju_mocap: a fake ZJU-MoCap root in the released layout (annots.npy with K, R, T in mm, D and
per-frame image paths; Camera_B<k>/<frame>.jpg; mask/ and mask_cihp/; new_params/<i>.npy with
poses, Rh, Th, shapes) rendered from the default-small body: the built records carry the exact
cameras and the world SMPL of X_w = R(Rh) SMPL(poses) + Th, the masks cover the body projected with
the stored labels, lens distortion is removed, and bad folders are errors naming the file and the
key before anything is written."""
import functools
import io
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

import smpl_jax
from imphmr_jax.data import builders
from imphmr_jax.data import multiview_video as mvv
from imphmr_jax.data.builders import zju_mocap
from imphmr_jax.data.synthetic import decode_mask, look_at_rotation
from imphmr_jax.render import rasterize, shading

BODY = "default-small"
SRC = 64                       # original image side; built at x0.5 -> 32 px
FRAMES = (5, 6, 7)             # image numbers of the 3 'ims' entries (params 5.npy, 6.npy, 7.npy)
# OpenCV-convention intrinsics (pixel (0, 0)'s centre at (0, 0)) and distortion per camera.
K_CV = [np.array([[80.0, 0.0, 31.0], [0.0, 82.0, 33.5], [0.0, 0.0, 1.0]]),
        np.array([[60.0, 0.0, 32.5], [0.0, 60.0, 30.0], [0.0, 0.0, 1.0]])]
D = [np.zeros(5), np.array([-0.45, 0.12, 0.002, -0.003, 0.0])]
TH = np.array([0.4, 0.95, -0.3])


def _camera(k):
    """World -> camera (R, T in metres) of camera k, looking at TH from 2.6 m; camera 1 sees the
    person off-centre, where its lens distortion is strong."""
    rot = look_at_rotation(0.3 + 2.2 * k, 0.15, 0.05 * k)
    return rot, -rot @ TH + np.array([0.35 * k, 0.15 * k, 2.6])


def _smpl(frame):
    """ZJU params of an image number: a small body pose, a root rotation in poses[:3], Rh, Th."""
    rng = np.random.default_rng(frame)
    poses = np.concatenate([[0.3, -0.2, 0.1], rng.normal(0, 0.15, 69)])
    return {"poses": poses[None], "Rh": np.array([[0.1, 1.0 + 0.1 * frame, -0.2]]),
            "Th": (TH + [0.02 * frame, 0.0, 0.0])[None], "shapes": rng.normal(0, 1, (1, 10))}


_FORWARD = jax.jit(smpl_jax.forward)


def _vertices(model, pose, betas):
    """(V, 3) float64 vertices of one (72,) pose and (10,) betas, no translation."""
    out = _FORWARD(model, jnp.asarray(np.reshape(pose, (1, 24, 3)), jnp.float32),
                   jnp.asarray(np.reshape(betas, (1, -1)), jnp.float32))
    return np.asarray(out.vertices[0], np.float64)


def _world_vertices(model, params):
    """X_w = R(Rh) SMPL(poses, shapes) + Th, computed directly (the convention under test)."""
    rh = Rotation.from_rotvec(params["Rh"][0]).as_matrix()
    return _vertices(model, params["poses"][0], params["shapes"][0]) @ rh.T + params["Th"][0]


@functools.partial(jax.jit, static_argnames="size")
def _shaded(model, cam, intr, size):
    frags = rasterize.rasterize(cam, model.faces, intr, size, size, near=0.05, max_tiles=4096)
    return shading.shade(frags, cam, model.faces, background=(0.3, 0.5, 0.4)), frags.mask


def _render(model, verts_w, k, size):
    """Pinhole image (size, size, 3) uint8 and mask of camera k (intrinsics scaled to size)."""
    rot, t = _camera(k)
    s = size / SRC
    K = K_CV[k]
    intr = np.array([s * K[0, 0], s * K[1, 1], s * (K[0, 2] + 0.5), s * (K[1, 2] + 0.5)])
    img, mask = _shaded(model, jnp.asarray((verts_w @ rot.T + t)[None], jnp.float32),
                        jnp.asarray(intr, jnp.float32), size)
    return (np.asarray(img[0]) * 255).round().astype(np.uint8), np.asarray(mask[0])


def _distort(image, mask, k):
    """What camera k's lens records: each distorted pixel samples the pinhole image at its
    undistorted position (OpenCV's model inverted by fixed-point iterations, nearest sample)."""
    K, (k1, k2, p1, p2, k3) = K_CV[k], D[k]
    jj, ii = np.meshgrid(np.arange(SRC, dtype=float), np.arange(SRC, dtype=float))
    xd, yd = (jj - K[0, 2]) / K[0, 0], (ii - K[1, 2]) / K[1, 1]
    x, y = xd.copy(), yd.copy()
    for _ in range(30):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        x = (xd - (2 * p1 * x * y + p2 * (r2 + 2 * x * x))) / radial
        y = (yd - (p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)) / radial
    u = np.clip(np.round(K[0, 0] * x + K[0, 2]).astype(int), 0, SRC - 1)
    v = np.clip(np.round(K[1, 1] * y + K[1, 2]).astype(int), 0, SRC - 1)
    return image[v, u], mask[v, u]


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **({"quality": 95} if path.endswith(".jpg") else {}))


def write_fake_subject(root, subject, model):
    """CoreView_<subject> with 3 frames x 2 cameras; returns the params by image number."""
    folder = os.path.join(root, f"CoreView_{subject}")
    cams = {"K": [], "R": [], "T": [], "D": []}
    for k in range(2):
        rot, t = _camera(k)
        cams["K"].append(K_CV[k])
        cams["R"].append(rot)
        cams["T"].append((t * 1000.0)[:, None])  # millimetres, (3, 1)
        cams["D"].append(D[k][:, None])
    ims, params = [], {}
    for f in FRAMES:
        params[f] = _smpl(f)
        os.makedirs(os.path.join(folder, "new_params"), exist_ok=True)
        np.save(os.path.join(folder, "new_params", f"{f}.npy"), params[f], allow_pickle=True)
        verts_w = _world_vertices(model, params[f])
        paths = []
        for k in range(2):
            rel = f"Camera_B{k + 1}/{f:06d}.jpg"
            image, mask = _render(model, verts_w, k, SRC)
            if np.any(D[k]):
                image, mask = _distort(image, mask, k)
            _save(os.path.join(folder, rel), image)
            m = np.where(mask, 255, 0).astype(np.uint8)
            png = os.path.splitext(rel)[0] + ".png"
            if k == 0:  # the union of the two folders is the silhouette
                top, bottom = m.copy(), m.copy()
                top[SRC // 2:], bottom[:SRC // 2] = 0, 0
                _save(os.path.join(folder, "mask", png), top)
                _save(os.path.join(folder, "mask_cihp", png), bottom)
            else:  # only mask_cihp/ for camera 1
                _save(os.path.join(folder, "mask_cihp", png), m)
            paths.append(rel)
        ims.append({"ims": paths, "kpts2d": None})
    with open(os.path.join(folder, "annots.npy"), "wb") as fh:
        np.save(fh, np.array({"cams": cams, "ims": ims}, dtype=object), allow_pickle=True)
    return params


@pytest.fixture(scope="module")
def model():
    return smpl_jax.load(BODY)


@pytest.fixture(scope="module")
def built(model, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("zju"))
    params = write_fake_subject(root, "377", model)
    shutil.copytree(os.path.join(root, "CoreView_377"), os.path.join(root, "CoreView_390"))
    data = str(tmp_path_factory.mktemp("tfds"))
    builders.build("zju_mocap", data, manual_dir=root, train_subjects=["377"],
                   test_subjects=["390"], frame_start=1, body=BODY, progress=False)
    src = builders.load_source("zju_mocap", "train", data)
    return root, data, params, [src[i] for i in range(len(src))]


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def test_records_carry_the_exact_cameras_and_order(built):
    _, data, _, recs = built
    assert [(int(r["frame"]), int(r["view"])) for r in recs] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for r in recs:
        k = int(r["view"])
        rot, t = _camera(k)
        np.testing.assert_allclose(r["extrinsics"][:, :3], rot, atol=1e-6)
        np.testing.assert_allclose(r["extrinsics"][:, 3], t, atol=1e-6)  # T / 1000
        K = K_CV[k]  # OpenCV centres at integers -> +0.5, then x0.5
        np.testing.assert_allclose(r["intrinsics"], 0.5 * np.array(
            [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5]), rtol=1e-6)
        assert int(r["sequence"]) == 377 and r["has_camera"] == 1 and r["has_mask"] == 1
        assert r["imgname"] == f"CoreView_377/Camera_B{k + 1}/{FRAMES[r['frame']]:06d}.jpg".encode()
        assert Image.open(io.BytesIO(r["image"])).size == (32, 32)
    test = builders.load_source("zju_mocap", "test", data)
    assert len(test) == 4 and int(test[0]["sequence"]) == 390
    meta = builders.build_metadata("zju_mocap", data)
    assert meta["counts"]["train"]["written"] == 4 and meta["options"]["frame_start"] == 1


def test_world_smpl_follows_rh_th_with_the_pelvis_handled(built, model):
    _, _, params, recs = built
    for r in recs:
        p = params[FRAMES[int(r["frame"])]]  # params file = the image number, not the position
        np.testing.assert_allclose(r["pose_world"][3:], p["poses"][0, 3:], atol=1e-6)
        np.testing.assert_allclose(r["betas"], p["shapes"][0], atol=1e-6)
        want = Rotation.from_rotvec(p["Rh"][0]) * Rotation.from_rotvec(p["poses"][0, :3])
        got = Rotation.from_rotvec(r["pose_world"][:3])
        assert (want.inv() * got).magnitude() < 1e-5
        verts = _vertices(model, r["pose_world"], r["betas"]) + r["transl_world"]
        np.testing.assert_allclose(verts, _world_vertices(model, p), atol=2e-5)
        # camera-frame labels: forward(pose) + cam_t = R X_w + t
        ext = r["extrinsics"].astype(np.float64)
        np.testing.assert_allclose(_vertices(model, r["pose"], r["betas"]) + r["cam_t"],
                                   verts @ ext[:, :3].T + ext[:, 3], atol=5e-5)


def test_masks_cover_the_body_projected_with_the_stored_labels(built, model):
    _, _, _, recs = built
    for r in recs:
        k = int(r["view"])
        stored = decode_mask(r["mask"])
        assert stored.shape == (32, 32)
        # The body rendered from the STORED labels (world SMPL, extrinsics, intrinsics).
        verts = _vertices(model, r["pose_world"], r["betas"]) + r["transl_world"]
        ext = r["extrinsics"].astype(np.float64)
        cam = jnp.asarray((verts @ ext[:, :3].T + ext[:, 3])[None], jnp.float32)
        fresh = np.asarray(_shaded(model, cam, jnp.asarray(r["intrinsics"]), 32)[1][0])
        assert fresh.sum() > 40
        assert _iou(stored, fresh) > 0.8, (k, _iou(stored, fresh))


def test_lens_distortion_is_removed(model):
    # Camera 1's recorded (distorted) view, undistorted by the builder's pixel step at full size,
    # is the pinhole view; the recorded one is not.
    image, pinhole = _render(model, _world_vertices(model, _smpl(FRAMES[0])), 1, SRC)
    rec_image, rec_mask = _distort(image, pinhole, 1)
    rgb, mask, intr = zju_mocap.prepare_view(rec_image, rec_mask, K_CV[1], D[1], undistort=True,
                                             image_scale=1.0, image_size=None)
    np.testing.assert_allclose(intr, [60.0, 60.0, 33.0, 30.5])
    assert rgb.shape == (SRC, SRC, 3) and mask.shape == (SRC, SRC)
    wrong_after, wrong_before = np.sum(mask != pinhole), np.sum(rec_mask != pinhole)
    assert wrong_after <= 0.5 * wrong_before and _iou(mask, pinhole) > 0.92, (
        wrong_after, wrong_before, _iou(mask, pinhole))
    inside = pinhole & mask
    assert np.abs(rgb[inside].astype(int) - image[inside]).mean() < 12
    # resizing: area-averaged, K scaled per axis with the +0.5 pixel centres
    _, small, intr2 = zju_mocap.prepare_view(rec_image, rec_mask, K_CV[1], D[1], undistort=False,
                                             image_scale=None, image_size=16)
    assert small.shape == (16, 16)
    np.testing.assert_allclose(intr2, 0.25 * np.array([60.0, 60.0, 33.0, 30.5]))


def test_undistort_map_inverts_the_lens_model():
    # distorted pixel d -> (iterative inverse, the test's own) pinhole pixel p -> the builder's
    # map at p must point back at d.
    K, dist = K_CV[1], D[1]
    u, v = zju_mocap.undistort_coords(K, dist, SRC, SRC)
    for j, i in [(18, 20), (32, 30), (47, 44), (16, 45)]:  # their pinhole rays stay in view
        xd, yd = (j - K[0, 2]) / K[0, 0], (i - K[1, 2]) / K[1, 1]
        x, y = xd, yd
        for _ in range(50):
            r2 = x * x + y * y
            radial = 1 + r2 * (dist[0] + r2 * (dist[1] + r2 * dist[4]))
            x, y = ((xd - (2 * dist[2] * x * y + dist[3] * (r2 + 2 * x * x))) / radial,
                    (yd - (dist[2] * (r2 + 2 * y * y) + 2 * dist[3] * x * y)) / radial)
        pj, pi = K[0, 0] * x + K[0, 2], K[1, 1] * y + K[1, 2]
        # bilinear interpolation of the map at the (non-integer) pinhole position
        uu = zju_mocap.remap_bilinear(u, np.array([pj]), np.array([pi]))[0]
        vv = zju_mocap.remap_bilinear(v, np.array([pj]), np.array([pi]))[0]
        assert abs(uu - j) < 0.05 and abs(vv - i) < 0.05


def test_params_file_number_from_the_image_name():
    assert zju_mocap.params_index("Camera_B3/000123.jpg", 7) == 123
    assert zju_mocap.params_index(
        "Camera (1)/CoreView_313_Camera_(1)_0042_2019-08-23_16-08-50.592.jpg", 3) == 42
    assert zju_mocap.params_index("Camera_B1/frame.jpg", 7) == 7


def test_people_loader_on_zju_and_same_camera_references(built):
    _, data, _, _ = built
    people = mvv.load_people("zju_mocap", split="train", data_dir=data)
    assert len(people) == 4 and people.images.shape == (4, 32, 32, 3)
    tri = mvv.sample_triplets(np.random.default_rng(0), people, 6, n_refs=2)
    for row in tri:
        assert people.frame[row[0]] not in people.frame[row[1:]]
    one = mvv.sample_triplets(np.random.default_rng(0), people, 6, n_refs=1, same_camera=True)
    assert np.all(people.view[one[:, 1]] == people.view[one[:, 0]])
    with pytest.raises(ValueError, match="same camera"):  # only 2 frames per camera
        mvv.sample_triplets(np.random.default_rng(0), people, 2, n_refs=2, same_camera=True)


def _no_dataset_written(data):
    return not any("array_record" in f for _, _, fs in os.walk(data) for f in fs)


def test_bad_folders_are_errors_naming_file_and_key(built, tmp_path):
    root, _, _, _ = built
    bad = str(tmp_path / "bad")
    shutil.copytree(os.path.join(root, "CoreView_377"), os.path.join(bad, "CoreView_377"))
    folder = os.path.join(bad, "CoreView_377")
    data = str(tmp_path / "d")
    build = lambda: builders.build("zju_mocap", data, manual_dir=bad,  # noqa: E731
                                   train_subjects=["377"], test_subjects=[], body=BODY,
                                   progress=False)
    ann = np.load(os.path.join(folder, "annots.npy"), allow_pickle=True).item()

    def write(obj):
        with open(os.path.join(folder, "annots.npy"), "wb") as fh:
            np.save(fh, np.array(obj, dtype=object), allow_pickle=True)

    with pytest.raises(FileNotFoundError, match="CoreView_313"):
        builders.build("zju_mocap", data, manual_dir=bad, train_subjects=["313"],
                       test_subjects=[], body=BODY, progress=False)
    os.rename(os.path.join(folder, "annots.npy"), os.path.join(folder, "x.npy"))
    with pytest.raises(FileNotFoundError, match=r"annots.npy not found: .*CoreView_377"):
        build()
    os.rename(os.path.join(folder, "x.npy"), os.path.join(folder, "annots.npy"))
    write({"ims": ann["ims"]})
    with pytest.raises(builders.AnnotationError,
                       match=r"annots.npy in .*CoreView_377 has no key 'cams'"):
        build()
    write({"cams": {k: v for k, v in ann["cams"].items() if k != "T"}, "ims": ann["ims"]})
    with pytest.raises(builders.AnnotationError, match=r"has no key 'cams'/'T'"):
        build()
    write(ann)
    os.remove(os.path.join(folder, "Camera_B2", f"{FRAMES[1]:06d}.jpg"))
    with pytest.raises(FileNotFoundError,
                       match=r"image file not found: .*Camera_B2/000006.jpg "
                             r".*'ims'\[1\]\['ims'\]\[1\]"):
        build()
    shutil.copy(os.path.join(folder, "Camera_B1", f"{FRAMES[1]:06d}.jpg"),
                os.path.join(folder, "Camera_B2", f"{FRAMES[1]:06d}.jpg"))
    p = np.load(os.path.join(folder, "new_params", "6.npy"), allow_pickle=True).item()
    del p["Th"]
    np.save(os.path.join(folder, "new_params", "6.npy"), p, allow_pickle=True)
    with pytest.raises(builders.AnnotationError, match=r"new_params/6.npy has no key 'Th'"):
        build()
    assert _no_dataset_written(data)
