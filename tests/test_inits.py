"""`neuhmr_jax.data.inits`: per-frame SMPL initialisations written here in each format (npz,
smplx layout, HybrIK's per-frame pickles) and read back; errors that name the file (and the key,
the first bad frame, both frame counts); rotation matrices -> axis-angle; HybrIK's root offset ->
SMPL transl; ImpHMR's crop camera -> the translation for the video's K, checked by projecting 3D
joints against SPIN's crop projection mapped back to the photo; `load_imphmr` on frames with
boxes through the real `inference.Predictor.predict` (its network replaced by fixed outputs)."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

import smpl_jax
from imphmr_jax import inference
from imphmr_jax.cli import InputError
from imphmr_jax.data import augment
from imphmr_jax.geometry import camera as cam_lib
from neuhmr_jax.data import inits, video
from neuhmr_jax.data.inits import Init

T = 4


@pytest.fixture(scope="module")
def body():
    return smpl_jax.load("default-small")


def _random_init(seed=0, n=T):
    rng = np.random.default_rng(seed)
    poses = rng.normal(0, 0.3, (n, 24, 3))
    poses[:, 0] = [np.pi * 0.95, 0.1, 0.0]
    return Init(poses, rng.normal(0, 0.5, (n, 10)),
                rng.normal([0, 0, 4], 0.2, (n, 3)), source="random")


# ------------------------------------------------------------------------------ Init and npz
def test_init_checks_shapes_and_values():
    init = _random_init()
    assert init.num_frames == T and len(init) == T
    assert init.poses.dtype == np.float32 and init.betas.shape == (T, 10)
    one = Init(init.poses, np.arange(10.0), init.transl, source="x")
    np.testing.assert_array_equal(one.betas, np.broadcast_to(np.arange(10.0), (T, 10)))
    with pytest.raises(InputError, match=r"x: key 'poses' must have shape \(T, 24, 3\)"):
        Init(np.zeros((T, 23, 3)), init.betas, init.transl, source="x")
    with pytest.raises(InputError, match=r"x: key 'transl' must have shape \(4, 3\)"):
        Init(init.poses, init.betas, np.zeros((3, 3)), source="x")
    poses = init.poses.copy()
    poses[2, 5, 1] = np.nan
    poses[3, 0, 0] = np.inf
    with pytest.raises(InputError, match=r"x: key 'poses'.*first at frame 2 \(2 bad frames\)"):
        Init(poses, init.betas, init.transl, source="x")
    with pytest.raises(InputError, match="x holds 4 frames but the video has 5"):
        init.replace(source="x").check_num_frames(5)
    np.testing.assert_allclose(init.rotmats(),
                               Rotation.from_rotvec(init.poses.reshape(-1, 3).astype(np.float64))
                               .as_matrix().reshape(T, 24, 3, 3), atol=1e-6)


def test_npz_round_trip_and_layouts(tmp_path):
    init = _random_init()
    path = inits.save_npz(init, tmp_path / "sub" / "init")
    assert path.endswith("init.npz")
    back = inits.load_npz(path)
    for k in ("poses", "betas", "transl"):
        np.testing.assert_array_equal(getattr(back, k), getattr(init, k))
    assert back.source == f"{path} (from random)"
    # (T, 72) poses, one betas row, 'trans' for transl
    np.savez(tmp_path / "flat.npz", poses=init.poses.reshape(T, 72), betas=init.betas[0],
             trans=init.transl)
    flat = inits.load_npz(tmp_path / "flat.npz")
    np.testing.assert_array_equal(flat.poses, init.poses)
    np.testing.assert_array_equal(flat.betas, np.broadcast_to(init.betas[0], (T, 10)))
    # rotation matrices
    np.savez(tmp_path / "mats.npz", poses=init.rotmats(), betas=init.betas, transl=init.transl)
    np.testing.assert_allclose(inits.load_npz(tmp_path / "mats.npz").poses, init.poses,
                               atol=1e-5)
    # smplx's layout (smpl_jax.export.save_smplx_params, the demo's params.npz)
    smpl_jax.save_smplx_params(tmp_path / "smplx.npz", init.poses, init.betas, init.transl)
    sx = inits.load_npz(tmp_path / "smplx.npz")
    np.testing.assert_allclose(sx.poses, init.poses, atol=1e-7)
    np.testing.assert_allclose(sx.transl, init.transl, atol=1e-7)


def test_npz_errors_name_the_file(tmp_path):
    init = _random_init()
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        inits.load_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.npz is not a readable .npz"):
        inits.load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "nobetas.npz", poses=init.poses, transl=init.transl)
    with pytest.raises(InputError, match=r"nobetas.npz: missing key 'betas'"):
        inits.load_npz(tmp_path / "nobetas.npz")
    transl = init.transl.copy()
    transl[3, 2] = np.nan
    np.savez(tmp_path / "nan.npz", poses=init.poses, betas=init.betas, transl=transl)
    with pytest.raises(InputError, match=r"nan.npz: key 'transl'.*first at frame 3"):
        inits.load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "shape.npz", poses=init.poses[:, :20], betas=init.betas,
             transl=init.transl)
    with pytest.raises(InputError, match=r"shape.npz: key 'poses'.*\(4, 20, 3\)"):
        inits.load_npz(tmp_path / "shape.npz")
    inits.save_npz(init, tmp_path / "ok.npz")
    with pytest.raises(InputError, match=r"ok.npz \(from random\) holds 4 frames but the video "
                                         r"has 7"):
        inits.load_init(str(tmp_path / "ok.npz"), 7)


# ------------------------------------------------------------------------------ HybrIK
def _write_hybrik(folder, init, offsets, layout="flat"):
    os.makedirs(folder, exist_ok=True)
    mats = init.rotmats().astype(np.float32)
    for t in range(init.num_frames):
        theta = mats[t].reshape(1, 216) if layout == "flat" else mats[t]
        data = {"pred_theta_mats": theta, "pred_shape": init.betas[t][None],
                "transl": offsets[t][None].astype(np.float32), "pred_uvd": np.zeros((29, 3))}
        with open(os.path.join(folder, f"{t:06d}.pkl"), "wb") as f:
            pickle.dump(data, f)


def test_hybrik_round_trip_and_root_offset(tmp_path, body):
    init = _random_init(1)
    offsets = np.random.default_rng(2).normal([0, 0.2, 5], 0.3, (T, 3))
    _write_hybrik(tmp_path / "run" / "hybrIK-out", init, offsets)
    got = inits.load_hybrik(tmp_path / "run", body)
    assert got.num_frames == T and "hybrIK-out" in got.source
    # rotation matrices -> axis-angle: the same rotations (angles < pi here, so the same vectors)
    np.testing.assert_allclose(got.poses, init.poses, atol=2e-5)
    np.testing.assert_allclose(got.betas, init.betas, atol=1e-6)
    # HybrIK's transl is where the root joint lies: SMPL with the converted transl puts it there
    joints = smpl_jax.forward(body, got.poses, got.betas, got.transl,
                              return_vertices=False).joints
    np.testing.assert_allclose(np.asarray(joints[:, 0]), offsets, atol=1e-5)
    # (24, 3, 3) matrices, folder given directly, and load_init's dispatch
    _write_hybrik(tmp_path / "mats", init, offsets, layout="mats")
    again = inits.load_init(str(tmp_path / "mats"), T, body=body)
    np.testing.assert_allclose(again.poses, got.poses, atol=1e-6)
    with pytest.raises(ValueError, match="body"):
        inits.load_init(str(tmp_path / "mats"), T)
    with pytest.raises(InputError, match=r"holds 4 frames but the video has 3"):
        inits.load_init(str(tmp_path / "mats"), 3, body=body)


def test_rotmat_axis_angle_round_trip():
    rng = np.random.default_rng(3)
    rotvec = Rotation.random(50, random_state=3).as_rotvec()
    rotvec[:5] *= rng.uniform(0, 1e-4, (5, 1))  # near identity
    mats = Rotation.from_rotvec(rotvec).as_matrix()
    np.testing.assert_allclose(inits.rotmats_to_axis_angle(mats, "m"), rotvec, atol=1e-9)
    with pytest.raises(InputError, match=r"m: matrix 2 is not a rotation"):
        inits.rotmats_to_axis_angle(np.concatenate([mats[:2], 2 * mats[2:3]]), "m")


def test_hybrik_errors_name_the_file(tmp_path, body):
    init = _random_init(4)
    offsets = np.tile([0.0, 0.0, 5.0], (T, 1))
    _write_hybrik(tmp_path / "corrupt", init, offsets)
    (tmp_path / "corrupt" / "000002.pkl").write_bytes(b"\x80\x04 broken pickle")
    with pytest.raises(InputError, match=r"000002\.pkl: cannot read the HybrIK frame file"):
        inits.load_hybrik(tmp_path / "corrupt", body)

    _write_hybrik(tmp_path / "nan", init, offsets)
    with open(tmp_path / "nan" / "000003.pkl", "rb") as f:
        data = pickle.load(f)
    data["pred_shape"][0, 4] = np.nan
    with open(tmp_path / "nan" / "000003.pkl", "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(InputError, match=r"000003\.pkl: key 'pred_shape'.*NaN.*frame 3"):
        inits.load_hybrik(tmp_path / "nan", body)

    _write_hybrik(tmp_path / "key", init, offsets)
    with open(tmp_path / "key" / "000001.pkl", "wb") as f:
        pickle.dump({"pred_shape": np.zeros(10), "transl": np.zeros(3)}, f)
    with pytest.raises(InputError, match=r"000001\.pkl: missing key 'pred_theta_mats'"):
        inits.load_hybrik(tmp_path / "key", body)

    _write_hybrik(tmp_path / "quat", init, offsets)
    with open(tmp_path / "quat" / "000000.pkl", "wb") as f:
        pickle.dump({"pred_theta_mats": np.zeros((1, 96)), "pred_shape": np.zeros(10),
                     "transl": np.zeros(3)}, f)
    with pytest.raises(InputError, match=r"000000\.pkl: key 'pred_theta_mats'.*quaternions"):
        inits.load_hybrik(tmp_path / "quat", body)

    _write_hybrik(tmp_path / "gap", init, offsets)
    os.remove(tmp_path / "gap" / "000001.pkl")
    with pytest.raises(InputError, match=r"gap: HybrIK frame 000001\.pkl is missing"):
        inits.load_hybrik(tmp_path / "gap", body)
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="neither a folder of HybrIK"):
        inits.load_init(str(tmp_path / "none"), T, body=body)
    with pytest.raises(InputError, match="no HybrIK per-frame pickles"):
        inits.load_hybrik(tmp_path / "none", body)
    with pytest.raises(FileNotFoundError, match="absent"):
        inits.load_init(str(tmp_path / "absent"), T, body=body)


# ------------------------------------------------------------------------------ crop camera
def _posed_joints(body):
    pose = np.zeros((1, 24, 3), np.float32)
    pose[0, 0] = [np.pi, 0, 0]  # upright in the camera frame (y down)
    pose[0, 18, 1], pose[0, 4, 0], pose[0, 16, 2] = -0.8, 0.6, -0.7
    return np.asarray(smpl_jax.forward(body, pose, np.zeros((1, 10), np.float32),
                                       return_vertices=False).joints[0, :24], np.float64)


def _crop_pixels(joints, cam, crop, res=224):
    """SPIN's projection of the crop camera, mapped back to photo pixels (as the model's
    training targets are made)."""
    t = np.asarray(cam_lib.weak_perspective_to_translation(np.asarray(cam)), np.float64)
    xn = np.asarray(cam_lib.perspective_projection_normalized(joints, t), np.float64)
    return augment.apply_affine(augment.invert_affine(crop.affine), (xn + 1) * res / 2)


def _pinhole(points, K):
    p = (K @ points.T).T
    return p[:, :2] / p[:, 2:]


def test_crop_camera_to_translation_projects_joints(body):
    joints = _posed_joints(body)
    photo = np.zeros((480, 640, 3), np.uint8)
    cam = np.array([0.9, 0.04, -0.06])
    for box, K in (
            ([400, 60, 520, 420], np.array([[900.0, 0, 300], [0, 900.0, 260], [0, 0, 1]])),
            ([40, 200, 150, 470], np.array([[20000.0, 0, 330], [0, 20000.0, 230], [0, 0, 1]]))):
        crop = inference.make_crop(photo, box, 224)
        T_full = inits.crop_camera_to_translation(cam, crop.center, crop.side, K)
        assert T_full[2] == pytest.approx(2 * K[0, 0] / (crop.side * cam[0]))
        ref = _crop_pixels(joints, cam, crop)
        full = _pinhole(joints + T_full, K)
        # Points at the body's depth land exactly where the crop camera put them ...
        flat = joints.copy()
        flat[:, 2] = 0.0
        # (to 1e-4 px: the crop projection is computed in float32 by jax)
        np.testing.assert_allclose(_pinhole(flat + T_full, K), _crop_pixels(flat, cam, crop),
                                   atol=1e-4)
        # ... and the rest differ by the perspective terms only (k: f over the crop's focal).
        p = K[:2, 2]
        k = K[0, 0] / (5000.0 * crop.side / 224)
        z = joints[:, 2:]
        predicted = ((ref - crop.center) * (k - 1) - (crop.center - p)) * z / (z + T_full[2])
        np.testing.assert_allclose(full - ref, predicted, atol=1e-4)
        assert np.abs(predicted).max() > 0.1  # the perspective terms are really exercised
        # Ignoring the box's offset from the principal point would be far off.
        wrong = _pinhole(joints + np.asarray(cam_lib.weak_perspective_to_translation(cam))
                         * [1, 1, K[0, 0] / (5000.0 * crop.side / 224)], K)
        assert np.abs(wrong - ref).max() > 50
    # fx != fy: the body origin still lands where the crop camera puts it
    K = np.array([[800.0, 0, 310], [0, 880.0, 250], [0, 0, 1]])
    crop = inference.make_crop(photo, [200, 100, 300, 400], 224)
    T_full = inits.crop_camera_to_translation(cam, crop.center, crop.side, K)
    np.testing.assert_allclose(_pinhole(T_full[None], K), _crop_pixels(np.zeros((1, 3)), cam,
                                                                       crop), atol=1e-4)
    # Principal point at the image centre, fx = fy: exactly inference's own conversion
    K = inits.default_intrinsics((480, 640))
    np.testing.assert_allclose(
        inits.crop_camera_to_translation(cam, crop.center, crop.side, K),
        inference.crop_to_full_translation(cam, crop.center, crop.side, (480, 640), K[0, 0]),
        rtol=1e-6)


# ------------------------------------------------------------------------------ ImpHMR init
class _FixedPredictor(inference.Predictor):
    """The real Predictor (crops, boxes, chunking, camera) with the network replaced by fixed
    outputs: pose, betas and crop camera per crop."""

    def __init__(self, body, pose, betas, cam, batch_size=2):
        super().__init__(None, {}, body, img_res=32, batch_size=batch_size)
        self.fixed = (pose, betas, cam)
        self.calls = []

    def forward(self, images):
        n = images.shape[0]
        self.calls.append(n)
        pose, betas, cam = self.fixed
        rot = Rotation.from_rotvec(pose.reshape(-1, 3)).as_matrix().reshape(24, 3, 3)
        return {"rotmat": np.repeat(rot[None], n, 0), "pose": np.repeat(pose[None], n, 0),
                "betas": np.repeat(betas[None], n, 0), "cam": np.repeat(cam[None], n, 0),
                "vertices": np.zeros((n, 5, 3)), "joints": np.zeros((n, 24, 3))}


def test_load_imphmr_with_boxes(tmp_path, body):
    rng = np.random.default_rng(5)
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    names = [f"img{k}.png" for k in (1, 2, 10)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(frames_dir / name)
    boxes = [[10, 5, 40, 55], [30, 10, 60, 50], [0, 0, 20, 30]]
    lines = [f"{n} {' '.join(map(str, b))}" for n, b in zip(names, boxes)]
    lines.append("img2.png 31 11 35 15")  # a second, smaller person: the largest box is used
    (tmp_path / "boxes.txt").write_text("\n".join(lines) + "\n")
    frames = video.read_frames(frames_dir)
    pose = rng.normal(0, 0.2, (24, 3))
    pose[0] = [np.pi, 0, 0]
    betas, cam = rng.normal(0, 0.5, 10), np.array([0.8, 0.05, 0.1])
    predictor = _FixedPredictor(body, pose, betas, cam)
    K = "100,110,38,31"
    init = inits.load_init("imphmr", frames=frames, predictor=predictor,
                           boxes=str(tmp_path / "boxes.txt"), K=K, progress=False)
    assert init.num_frames == 3 and predictor.calls == [2, 1]  # chunks of batch_size frames
    np.testing.assert_allclose(init.poses, np.broadcast_to(pose, (3, 24, 3)), atol=1e-6)
    np.testing.assert_allclose(init.betas[1], betas, atol=1e-6)
    Kmat = video.parse_intrinsics(K)
    for t, box in enumerate(boxes):
        center, scale = inference.box_to_center_scale(box)
        want = inits.crop_camera_to_translation(cam, center, 200 * scale, Kmat)
        np.testing.assert_allclose(init.transl[t], want, rtol=1e-6)
        # the body origin projects where the crop camera put it: the box centre + (b/2)·s·t
        u = _pinhole(init.transl[t][None].astype(np.float64), Kmat.astype(np.float64))[0]
        np.testing.assert_allclose(u, center + 100 * scale * cam[0] * cam[1:], atol=1e-3)
    # boxes as an array, and a video-like sequence whose frames are named by number
    arr = inits.load_imphmr([frames[i] for i in range(3)], predictor, boxes=np.array(boxes),
                            K=K, progress=False)
    np.testing.assert_allclose(arr.transl, init.transl, rtol=1e-6)
    (tmp_path / "numbered.txt").write_text("000000.jpg 10 5 40 55\n1 30 10 60 50\n")
    with pytest.raises(InputError, match=r"no box for frame 2 \(000002\) in numbered.txt"):
        inits.load_imphmr([frames[i] for i in range(3)], predictor,
                          boxes=str(tmp_path / "numbered.txt"), progress=False)
    (tmp_path / "partial.txt").write_text(lines[0] + "\n")
    with pytest.raises(InputError, match="no box for img2.png in partial.txt"):
        inits.load_init("imphmr", frames=frames, predictor=predictor,
                        boxes=str(tmp_path / "partial.txt"), progress=False)
    with pytest.raises(InputError, match=r"shape \(3, 4\)"):
        inits.load_imphmr(frames, predictor, boxes=np.zeros((2, 4)), progress=False)
    with pytest.raises(InputError, match=r"frames 2\.\.2: box .* lies outside"):
        inits.load_imphmr(frames, predictor, boxes=np.array(boxes[:2] + [[200, 200, 220, 230]]),
                          progress=False)
