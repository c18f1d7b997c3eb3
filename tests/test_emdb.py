"""EMDB and 3DPW loaders on small files written here in the datasets' exact layouts: fields, split
selection, errors naming the file and the key, and the camera-frame ground truth against an
independent NumPy/SciPy computation."""
import os
import pickle
import struct

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import smpl_jax
from imphmr_jax.cli import InputError, UnknownNameError
from neuhmr_jax.data import emdb, threedpw

PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


@pytest.fixture(scope="module")
def body():
    return smpl_jax.load("default-small")


# ------------------------------------------------------------------------------ EMDB files
def random_extrinsics(rng, n):
    """(n, 4, 4) world -> camera: a random camera orientation, the world origin ~4 m ahead."""
    rot = Rotation.random(n, random_state=int(rng.integers(1 << 30))).as_matrix()
    ext = np.zeros((n, 4, 4))
    ext[:, :3, :3] = rot
    ext[:, :3, 3] = rng.normal(scale=0.3, size=(n, 3)) + [0.0, 0.0, 4.0]
    ext[:, 3, 3] = 1.0
    return ext


def emdb_data(rng, name, n, *, gender="male", emdb1=True, emdb2=False, good=None):
    """A dict in the exact layout of EMDB's *_data.pkl."""
    good = np.ones(n, bool) if good is None else np.asarray(good, bool)
    return {
        "gender": gender,
        "name": name,
        "emdb1": emdb1,
        "emdb2": emdb2,
        "n_frames": n,
        "good_frames_mask": good,
        "camera": {"intrinsics": np.array([[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]]),
                   "extrinsics": random_extrinsics(rng, n), "width": 1280, "height": 720},
        "smpl": {"poses_root": Rotation.random(n, random_state=int(rng.integers(1 << 30)))
                 .as_rotvec(),
                 "poses_body": rng.normal(scale=0.3, size=(n, 69)),
                 "trans": rng.normal(scale=1.0, size=(n, 3)) + [2.0, -1.0, 0.5],
                 "betas": rng.normal(size=10)},
        "kp2d": rng.uniform(0, 700, size=(n, 24, 2)),
        "bboxes": {"bboxes": np.tile([100.0, 50.0, 400.0, 700.0], (n, 1)),
                   "invalid_idxs": np.flatnonzero(~good)},
    }


def write_emdb(root, subject, seq, data):
    folder = os.path.join(root, subject, seq)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    path = os.path.join(folder, f"{subject}_{seq}_data.pkl")
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def write_two_sequences(root, seed=0):
    """P0/01_walk (6 frames, EMDB1, male, frame 2 bad) and P1/05_run (9 frames, EMDB1, female,
    frames 0 and 7 bad), plus P1/07_global (5 frames, EMDB2 only). Returns {name: data}."""
    rng = np.random.default_rng(seed)
    a = emdb_data(rng, "P0_01_walk", 6, gender="male", good=[1, 1, 0, 1, 1, 1])
    b = emdb_data(rng, "P1_05_run", 9, gender="female", good=[0, 1, 1, 1, 1, 1, 1, 0, 1])
    c = emdb_data(rng, "P1_07_global", 5, gender="neutral", emdb1=False, emdb2=True)
    write_emdb(root, "P0", "01_walk", a)
    write_emdb(root, "P1", "05_run", b)
    write_emdb(root, "P1", "07_global", c)
    return {"P0_01_walk": a, "P1_05_run": b, "P1_07_global": c}


def test_load_sequence_fields(tmp_path):
    data = write_two_sequences(str(tmp_path))
    a = data["P0_01_walk"]
    path = os.path.join(str(tmp_path), "P0", "01_walk", "P0_01_walk_data.pkl")
    seq = emdb.load_sequence(path)
    assert (seq.name, seq.subject, seq.sequence_id, seq.gender) == ("P0_01_walk", "P0",
                                                                    "01_walk", "male")
    assert seq.emdb1 is True and seq.emdb2 is False and seq.n_frames == 6
    assert seq.width == 1280 and seq.height == 720
    np.testing.assert_array_equal(seq.good_frames_mask, a["good_frames_mask"])
    np.testing.assert_array_equal(seq.good_frames, [0, 1, 3, 4, 5])
    np.testing.assert_allclose(seq.extrinsics, a["camera"]["extrinsics"])
    np.testing.assert_allclose(seq.intrinsics, a["camera"]["intrinsics"])
    np.testing.assert_allclose(seq.poses, np.concatenate([a["smpl"]["poses_root"],
                                                          a["smpl"]["poses_body"]], 1))
    np.testing.assert_allclose(seq.trans, a["smpl"]["trans"])
    np.testing.assert_allclose(seq.betas, a["smpl"]["betas"])
    np.testing.assert_allclose(seq.kp2d, a["kp2d"])
    np.testing.assert_allclose(seq.bboxes, a["bboxes"]["bboxes"])
    np.testing.assert_array_equal(seq.invalid_bbox_idxs, [2])
    assert len(seq.image_paths) == 6
    assert seq.image_paths[3] == os.path.join(os.path.dirname(path), "images", "00003.jpg")
    # The sequence folder works as well as the file.
    again = emdb.load_sequence(os.path.dirname(path))
    assert again.path == seq.path and again.name == seq.name


def test_find_sequences_splits(tmp_path):
    root = str(tmp_path)
    write_two_sequences(root)
    os.makedirs(os.path.join(root, "P2", "no_pkl_here"))  # skipped with a warning
    os.makedirs(os.path.join(root, "notes"))  # not a subject folder
    assert [s.name for s in emdb.find_sequences(root)] == ["P0_01_walk", "P1_05_run"]
    assert [s.name for s in emdb.find_sequences(root, "emdb2")] == ["P1_07_global"]
    assert len(emdb.find_sequences(root, "all")) == 3
    assert len(emdb.find_sequences(root, None)) == 3
    with pytest.raises(UnknownNameError, match="emdb3"):
        emdb.find_sequences(root, "emdb3")
    with pytest.raises(FileNotFoundError, match="missing_root"):
        emdb.find_sequences(os.path.join(root, "missing_root"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no EMDB sequences"):
        emdb.find_sequences(str(empty))


@pytest.mark.parametrize("keys", [("good_frames_mask",), ("gender",), ("n_frames",),
                                  ("camera",), ("camera", "extrinsics"), ("camera", "width"),
                                  ("smpl", "poses_body"), ("smpl", "betas"), ("kp2d",),
                                  ("bboxes", "invalid_idxs")])
def test_missing_key_names_file_and_key(tmp_path, keys):
    data = emdb_data(np.random.default_rng(1), "P0_a", 4)
    d = data
    for k in keys[:-1]:
        d = d[k]
    del d[keys[-1]]
    path = write_emdb(str(tmp_path), "P0", "a", data)
    with pytest.raises(InputError) as e:
        emdb.load_sequence(path)
    msg = str(e.value)
    assert path in msg and "missing key" in msg
    assert "/".join(repr(k) for k in keys) in msg


@pytest.mark.parametrize("edit, key", [
    (lambda d: d["camera"].__setitem__("extrinsics", np.zeros((3, 4, 4))), "'extrinsics'"),
    (lambda d: d["smpl"].__setitem__("poses_body", np.zeros((4, 63))), "'poses_body'"),
    (lambda d: d["smpl"].__setitem__("betas", np.zeros(16)), "'betas'"),
    (lambda d: d.__setitem__("gender", "robot"), "'gender'"),
    (lambda d: d.__setitem__("good_frames_mask", np.full(4, 0.5)), "'good_frames_mask'"),
    (lambda d: d.__setitem__("n_frames", "four"), "'n_frames'"),
    (lambda d: d.__setitem__("emdb1", "yes"), "'emdb1'"),
    (lambda d: d["smpl"]["trans"].__setitem__((0, 0), np.nan), "'trans'"),
    (lambda d: d["camera"]["extrinsics"].__setitem__((1, 0, 0), 5.0), "'extrinsics'"),
    (lambda d: d.__setitem__("camera", [1, 2]), "'camera'"),
])
def test_malformed_value_names_file_and_key(tmp_path, edit, key):
    data = emdb_data(np.random.default_rng(2), "P0_a", 4)
    edit(data)
    path = write_emdb(str(tmp_path), "P0", "a", data)
    with pytest.raises(InputError) as e:
        emdb.load_sequence(path)
    assert path in str(e.value) and key in str(e.value)


def test_missing_and_corrupt_files(tmp_path):
    missing = str(tmp_path / "P0" / "x" / "P0_x_data.pkl")
    with pytest.raises(FileNotFoundError, match="P0_x_data.pkl"):
        emdb.load_sequence(missing)
    folder = tmp_path / "P0" / "bad"
    folder.mkdir(parents=True)
    path = folder / "P0_bad_data.pkl"
    good = pickle.dumps(emdb_data(np.random.default_rng(3), "P0_bad", 4))
    for content in (b"this is not a pickle", good[: len(good) // 2]):
        path.write_bytes(content)
        with pytest.raises(InputError, match="cannot read") as e:
            emdb.load_sequence(str(path))
        assert str(path) in str(e.value)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(InputError, match="dict") as e:
        emdb.load_sequence(str(path))
    assert str(path) in str(e.value)


# ------------------------------------------------------------------------------ camera-frame GT
def chain_rotations(pose_aa):
    """Independent global rotations: scipy Rotations composed down PARENTS. (n, 72) -> (n, 24, 3,
    3)."""
    n = pose_aa.shape[0]
    local = Rotation.from_rotvec(pose_aa.reshape(-1, 3)).as_matrix().reshape(n, 24, 3, 3)
    out = np.zeros_like(local)
    for j, p in enumerate(PARENTS):
        out[:, j] = local[:, j] if p < 0 else np.matmul(out[:, p], local[:, j])
    return out


def numpy_camera_gt(body, poses, betas, trans, ext):
    """World SMPL (smpl_jax.forward with the translation) moved to the camera frame in NumPy."""
    n = poses.shape[0]
    out = smpl_jax.forward(body, poses.reshape(n, 24, 3).astype(np.float32),
                           np.broadcast_to(betas, (n, 10)).astype(np.float32),
                           trans.astype(np.float32))
    r, t = ext[:, :3, :3], ext[:, :3, 3]
    joints = np.einsum("nij,nkj->nki", r, np.asarray(out.joints[:, :24], np.float64)) + t[:, None]
    verts = np.einsum("nij,nkj->nki", r, np.asarray(out.vertices, np.float64)) + t[:, None]
    glob = np.einsum("nij,nkjl->nkil", r, chain_rotations(poses))
    return joints, verts, glob


def test_gt_camera_frame_matches_numpy(tmp_path, body):
    data = write_two_sequences(str(tmp_path))
    seq = emdb.find_sequences(str(tmp_path))[1]  # P1_05_run, 9 frames
    d = data[seq.name]
    frames = seq.good_frames
    gt = emdb.gt_camera_frame(seq, body, frames=frames)
    poses = np.concatenate([d["smpl"]["poses_root"], d["smpl"]["poses_body"]], 1)[frames]
    joints, verts, glob = numpy_camera_gt(body, poses, d["smpl"]["betas"],
                                          d["smpl"]["trans"][frames],
                                          d["camera"]["extrinsics"][frames])
    np.testing.assert_array_equal(gt.frames, frames)
    np.testing.assert_allclose(gt.joints, joints, atol=2e-5)
    np.testing.assert_allclose(gt.vertices, verts, atol=2e-5)
    np.testing.assert_allclose(gt.global_rotmats, glob, atol=1e-9)
    root = np.einsum("nij,njk->nik", d["camera"]["extrinsics"][frames, :3, :3],
                     Rotation.from_rotvec(d["smpl"]["poses_root"][frames]).as_matrix())
    np.testing.assert_allclose(gt.root_rotmat, root, atol=1e-9)
    # All frames by default; joints only on request.
    assert emdb.gt_camera_frame(seq, body, vertices=False).vertices is None
    assert emdb.gt_camera_frame(seq, body).joints.shape == (9, 24, 3)


def test_gt_body_by_gender(tmp_path, body):
    write_two_sequences(str(tmp_path))
    seq = emdb.find_sequences(str(tmp_path))[1]  # female
    big = smpl_jax.load("default")
    gt = emdb.gt_camera_frame(seq, {"female": big, "male": body}, frames=[1])
    assert gt.vertices.shape[1] == big.v_template.shape[0]
    with pytest.raises(ValueError, match="'female'"):
        emdb.gt_camera_frame(seq, {"male": body}, frames=[1])


# ------------------------------------------------------------------------------ 3DPW files
class Py2Pickler(pickle._Pickler):
    """Writes bytes as python 2 `str` opcodes (what 3DPW's python 2 pickles hold, and what python
    3 can only read with encoding='latin1')."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _py2(x):
    """Strings as python 2 byte strings, recursively (keys included)."""
    if isinstance(x, dict):
        return {_py2(k): _py2(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_py2(v) for v in x]
    if isinstance(x, str):
        return x.encode("latin1")
    return x


def threedpw_data(rng, name, t, people=2):
    """A dict in the layout of 3DPW's sequenceFiles/<split>/<sequence>.pkl."""
    valid = [np.ones(t, bool) for _ in range(people)]
    valid[0][[1, t - 3]] = False
    return {
        "sequence": name,
        "genders": ["m", "f"][:people],
        "poses": [np.concatenate([Rotation.random(t, random_state=int(rng.integers(1 << 30)))
                                  .as_rotvec(), rng.normal(scale=0.3, size=(t, 69))], 1)
                  for _ in range(people)],
        "betas": [rng.normal(size=300) for _ in range(people)],  # the files hold more than 10
        "trans": [rng.normal(size=(t, 3)) for _ in range(people)],
        "cam_poses": random_extrinsics(rng, t),
        "cam_intrinsics": np.array([[1960.0, 0, 540], [0, 1960.0, 960], [0, 0, 1]]),
        "campose_valid": valid,
        "img_frame_ids": np.arange(t) * 2,
        "poses2d": [rng.normal(size=(t, 3, 18)) for _ in range(people)],
    }


def write_threedpw(root, split, data):
    folder = os.path.join(root, "sequenceFiles", split)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, data["sequence"] + ".pkl")
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(_py2(data))
    return path


def test_threedpw_latin1_pickle_loads(tmp_path, body):
    rng = np.random.default_rng(7)
    data = threedpw_data(rng, "downtown_walking_00", 8)
    path = write_threedpw(str(tmp_path), "test", data)
    with open(path, "rb") as f, pytest.raises(UnicodeDecodeError):
        pickle.load(f)  # a python 2 pickle: python 3's default decoding fails
    seq = threedpw.load_sequence(path)
    assert seq.name == "downtown_walking_00" and seq.split == "test" and seq.n_frames == 8
    assert [p.gender for p in seq.people] == ["male", "female"]
    np.testing.assert_allclose(seq.cam_poses, data["cam_poses"])
    np.testing.assert_allclose(seq.intrinsics, data["cam_intrinsics"])
    for p, who in enumerate(seq.people):
        np.testing.assert_allclose(who.poses, data["poses"][p])
        np.testing.assert_allclose(who.betas, data["betas"][p][:10])
        np.testing.assert_allclose(who.trans, data["trans"][p])
        np.testing.assert_array_equal(who.campose_valid, data["campose_valid"][p])
    np.testing.assert_array_equal(seq.people[0].valid_frames, [0, 2, 3, 4, 6, 7])
    assert seq.track_name(1) == "downtown_walking_00_1"
    assert seq.image_paths[4] == os.path.join(str(tmp_path), "imageFiles",
                                              "downtown_walking_00", "image_00004.jpg")
    assert [s.name for s in threedpw.find_sequences(str(tmp_path), "test")] == [seq.name]
    # Camera-frame ground truth, as for EMDB.
    gt = threedpw.gt_camera_frame(seq, 1, body, frames=[0, 3])
    joints, _, glob = numpy_camera_gt(body, data["poses"][1][[0, 3]], data["betas"][1][:10],
                                      data["trans"][1][[0, 3]], data["cam_poses"][[0, 3]])
    np.testing.assert_allclose(gt.joints, joints, atol=2e-5)
    np.testing.assert_allclose(gt.global_rotmats, glob, atol=1e-9)


def test_threedpw_errors(tmp_path):
    rng = np.random.default_rng(8)
    with pytest.raises(FileNotFoundError, match="sequenceFiles"):
        threedpw.find_sequences(str(tmp_path), "test")
    data = threedpw_data(rng, "s1", 5, people=1)
    del data["campose_valid"]
    path = write_threedpw(str(tmp_path), "test", data)
    with pytest.raises(InputError, match="campose_valid") as e:
        threedpw.load_sequence(path)
    assert path in str(e.value)
    data = threedpw_data(rng, "s2", 5)
    data["poses"][1] = data["poses"][1][:, :69]
    path = write_threedpw(str(tmp_path), "test", data)
    with pytest.raises(InputError, match=r"'poses'/1") as e:
        threedpw.load_sequence(path)
    assert path in str(e.value)
    data = threedpw_data(rng, "s3", 5)
    data["trans"] = data["trans"][:1]
    path = write_threedpw(str(tmp_path), "test", data)
    with pytest.raises(InputError, match="'trans'.*1 entries"):
        threedpw.load_sequence(path)
