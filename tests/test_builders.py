"""TFDS builders without TensorFlow: real-dataset builders from tiny SPIN/PARE-format npz files and
image folders written here, the synthetic_humans builder (fake generator, and the real renderer when
it is installed), load_source/build/CLI, bad inputs, NaN rules and interrupted builds."""
from __future__ import annotations

import dataclasses
import io
import os
import sys
import types

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imphmr_jax.data import builders, schema
from imphmr_jax.data.builders import real

OUT = os.path.join(os.path.dirname(__file__), "_output")

# First (primary) npz file name of each split: the real SPIN/PARE names.
REAL_FILES = {
    "h36m": {"train": "h36m_train.npz", "test_p1": "h36m_valid_protocol1.npz",
             "test_p2": "h36m_valid_protocol2.npz"},
    "mpi_inf_3dhp": {"train": "mpi_inf_3dhp_train.npz", "test": "mpi_inf_3dhp_valid.npz"},
    "pw3d": {"train": "3dpw_train.npz", "test": "3dpw_test.npz"},
    "pw3d_occ": {"test": "3dpw_occ_test.npz"},
    "coco_eft": {"train": "coco_2014_train_eft.npz"},
    "mpii_eft": {"train": "mpii_train_eft.npz"},
    "lspet_eft": {"train": "hr-lspet_train_eft.npz"},
    "lsp": {"test": "lsp_dataset_test.npz"},
}


def _save_image(path, arr, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def _annotations(n, seed, names, full=True):
    """SPIN-format arrays with distinct, recognisable values per sample."""
    rng = np.random.default_rng(seed)
    ann = dict(imgname=names, center=rng.uniform(20, 40, (n, 2)), scale=rng.uniform(0.1, 0.2, n))
    if full:
        ann.update(
            part=np.concatenate([rng.uniform(0, 60, (n, 24, 2)), np.ones((n, 24, 1))], -1),
            openpose=np.concatenate([rng.uniform(0, 60, (n, 25, 2)), np.full((n, 25, 1), .5)], -1),
            S=np.concatenate([rng.normal(0, .3, (n, 24, 3)), np.ones((n, 24, 1))], -1),
            pose=rng.normal(0, .3, (n, 72)), shape=rng.normal(0, 1, (n, 10)),
            has_smpl=np.ones(n), gender=np.array(["m", "f", "m", "f"][:n]))
    return ann


def _write_split(root, npz_name, n=3, seed=0, name_dtype="U", full=True, subdir="", fmt="jpg",
                 **overrides):
    folder = os.path.join(root, "imgs", os.path.splitext(npz_name)[0])
    names = [f"imgs/{os.path.splitext(npz_name)[0]}/im{i}.{fmt}" for i in range(n)]
    for i, nm in enumerate(names):
        arr = np.zeros((64, 80, 3), np.uint8)
        arr[..., 0] = 40 * i + 10
        arr[..., 1] = seed * 20
        _save_image(os.path.join(root, nm), arr)
    del folder
    if name_dtype == "S":
        names = np.array([s.encode() for s in names], dtype="S")
    elif name_dtype == "O":
        names = np.array(names, dtype=object)
    else:
        names = np.array(names)
    ann = _annotations(n, seed, names, full=full)
    ann.update(overrides)
    os.makedirs(os.path.join(root, subdir), exist_ok=True)
    np.savez(os.path.join(root, subdir, npz_name), **ann)
    return ann


def _by_name(source):
    return {bytes(r["imgname"]).decode(): r for r in (source[i] for i in range(len(source)))}


def _decode(b):
    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_builder_round_trip(tmp_path, name):
    root, data = str(tmp_path / "manual"), str(tmp_path / "data")
    anns = {}
    for k, (split, npz) in enumerate(REAL_FILES[name].items()):
        # vary how the image names are stored (str, bytes, object) and where the npz lives
        anns[split] = _write_split(root, npz, n=3, seed=k + 1, name_dtype="USO"[k % 3],
                                   subdir="dataset_extras" if k % 2 else "")
    builders.build(name, data, manual_dir=root, progress=False)
    meta = builders.build_metadata(name, data)
    for split, ann in anns.items():
        src = builders.load_source(name, split, data)
        assert len(src) == 3
        assert meta["counts"][split]["written"] == 3
        got = _by_name(src)
        for i in range(3):
            nm = ann["imgname"][i]
            nm = nm.decode() if isinstance(nm, bytes) else str(nm)
            r = got[nm]
            schema.validate_record({k: (np.asarray(v, schema.RECORD_FIELDS[k][1])
                                        if schema.RECORD_FIELDS[k][0] is not None else v)
                                    for k, v in r.items()})
            np.testing.assert_allclose(r["center"], ann["center"][i], rtol=1e-6)
            np.testing.assert_allclose(r["scale"], ann["scale"][i], rtol=1e-6)
            # SPIN's 49 = 25 OpenPose then 24 GT
            np.testing.assert_allclose(r["keypoints_2d"][:25], ann["openpose"][i], rtol=1e-6)
            np.testing.assert_allclose(r["keypoints_2d"][25:], ann["part"][i], rtol=1e-6)
            np.testing.assert_allclose(r["joints_3d"], ann["S"][i], rtol=1e-6)
            np.testing.assert_allclose(r["pose"], ann["pose"][i], rtol=1e-6)
            np.testing.assert_allclose(r["betas"], ann["shape"][i], rtol=1e-6)
            assert r["has_smpl"] == 1 and r["has_pose_3d"] == 1
            assert r["gender"] == {"m": 0, "f": 1}[str(ann["gender"][i])]
            assert r["has_camera"] == 0 and r["has_mask"] == 0 and r["mask"] == b""
            # not cropping: the original file's bytes are stored
            with open(os.path.join(root, nm), "rb") as f:
                assert r["image"] == f.read()


def test_parse_gender():
    assert real.parse_gender(b"m") == schema.GENDER_MALE  # SPIN's str(b'm') == 'm' is False
    assert real.parse_gender(np.bytes_(b"f")) == schema.GENDER_FEMALE
    assert real.parse_gender("m") == 0 and real.parse_gender(np.str_("female")) == 1
    assert real.parse_gender("n") == -1 and real.parse_gender(b"") == -1
    assert real.parse_gender(np.int64(1)) == 1 and real.parse_gender(-1) == -1
    with pytest.raises(ValueError, match="unknown gender"):
        real.parse_gender("x")


def test_gender_bytes_array_and_missing_key_defaults(tmp_path):
    root, data = str(tmp_path / "m"), str(tmp_path / "d")
    # bytes gender array (dtype S1): b'm' must be male
    _write_split(root, "3dpw_test.npz", n=3, gender=np.array([b"m", b"f", b"m"], dtype="S1"))
    # minimal file: only the required keys -> the defaults of docs/datasets.md#npz-keys
    _write_split(root, "3dpw_train.npz", n=2, full=False, seed=3)
    builders.build("pw3d", data, manual_dir=root, progress=False)
    test = [builders.load_source("pw3d", "test", data)[i] for i in range(3)]
    assert [r["gender"] for r in test] == [0, 1, 0]
    for r in (builders.load_source("pw3d", "train", data)[i] for i in range(2)):
        assert r["has_smpl"] == 0 and r["has_pose_3d"] == 0 and r["gender"] == -1
        assert not np.any(r["keypoints_2d"]) and not np.any(r["pose"]) and not np.any(r["betas"])
        assert not np.any(r["joints_3d"])
    # pose present, has_smpl key absent -> has_smpl 1; S absent -> has_pose_3d 0 (SPIN)
    ann = _annotations(2, 5, np.array(["a.jpg", "b.jpg"]))
    del ann["has_smpl"], ann["S"]
    np.savez(tmp_path / "x.npz", **ann)
    a = real.load_annotations(tmp_path / "x.npz")
    recs = [real.annotation_record(a, i) for i in range(2)]
    assert all(r["has_smpl"] == 1 and r["has_pose_3d"] == 0 for r in recs)


def test_precrop_keeps_keypoints_on_image_content(tmp_path):
    root, data = str(tmp_path / "m"), str(tmp_path / "d")
    os.makedirs(root + "/images")
    W, H = 200, 160
    kp = (130.0, 50.0)
    img = Image.new("RGB", (W, H), (90, 90, 90))
    ImageDraw.Draw(img).rectangle([kp[0] - 3, kp[1] - 3, kp[0] + 3, kp[1] + 3], fill=(255, 0, 0))
    img.save(root + "/images/a.png")
    # second sample: box near the top-left corner -> crop clipped to the image
    img.save(root + "/images/b.png")
    part = np.zeros((2, 24, 3))
    part[:, 3] = [kp[0], kp[1], 1.0]
    center = np.array([[100.0, 80.0], [10.0, 20.0]])
    scale = np.array([0.5, 0.3])
    np.savez(root + "/lsp_dataset_test.npz", imgname=np.array(["images/a.png", "images/b.png"]),
             center=center, scale=scale, part=part)
    builders.build("lsp", data, manual_dir=root, precrop_margin=1.2, progress=False)
    src = builders.load_source("lsp", "test", data)
    r = _by_name(src)["images/a.png"]
    crop = _decode(r["image"])
    assert r["image"][:2] == b"\xff\xd8"  # re-encoded as JPEG
    # side 1.2 * 200 * 0.5 = 120 around (100, 80): x 40..160, y 20..140
    assert crop.shape == (120, 120, 3)
    np.testing.assert_allclose(r["center"], [60.0, 60.0])
    x, y = r["keypoints_2d"][25 + 3, :2]
    np.testing.assert_allclose([x, y], [kp[0] - 40, kp[1] - 20])
    px = crop[int(round(y)), int(round(x))].astype(int)
    assert px[0] > 200 and px[1] < 60 and px[2] < 60, px
    # a grey pixel away from the marker stays grey (the crop is not shifted)
    assert abs(int(crop[int(y) + 15, int(x)][0]) - 90) < 12
    rb = _by_name(src)["images/b.png"]
    # side 1.2 * 60 = 72 around (10, 20): x -26..46 -> 0..46, y -16..56 -> 0..56
    assert _decode(rb["image"]).shape == (56, 46, 3)
    np.testing.assert_allclose(rb["center"], [10.0, 20.0])
    assert builders.build_metadata("lsp", data)["options"]["precrop_margin"] == 1.2
    os.makedirs(OUT, exist_ok=True)
    Image.fromarray(crop).save(os.path.join(OUT, "builders_precrop.png"))


def test_missing_npz_and_bad_keys_are_errors_naming_them(tmp_path):
    root, data = str(tmp_path / "m"), str(tmp_path / "d")
    os.makedirs(root)
    with pytest.raises(FileNotFoundError, match="lsp_dataset_test.npz"):
        builders.build("lsp", data, manual_dir=root, progress=False)
    ann = _write_split(root, "lsp_dataset_test.npz", n=2)
    bad = dict(ann)
    del bad["center"]
    np.savez(root + "/lsp_dataset_test.npz", **bad)
    with pytest.raises(real.AnnotationError, match=r"lsp_dataset_test.npz.*'center'"):
        builders.build("lsp", data, manual_dir=root, progress=False)
    bad = dict(ann, part=np.zeros((2, 24, 2)))
    np.savez(root + "/lsp_dataset_test.npz", **bad)
    with pytest.raises(real.AnnotationError, match=r"'part' must have shape \(N, 24, 3\)"):
        builders.build("lsp", data, manual_dir=root, progress=False)
    bad = dict(ann, S=np.zeros((3, 24, 4)))  # wrong N
    np.savez(root + "/lsp_dataset_test.npz", **bad)
    with pytest.raises(real.AnnotationError, match=r"'S'.*N=2"):
        builders.build("lsp", data, manual_dir=root, progress=False)
    bad = dict(ann, gender=np.array(["m", "q"]))
    np.savez(root + "/lsp_dataset_test.npz", **bad)
    with pytest.raises(real.AnnotationError, match="gender"):
        builders.build("lsp", data, manual_dir=root, progress=False)
    with open(root + "/lsp_dataset_test.npz", "wb") as f:
        f.write(b"not a zip")
    with pytest.raises(real.AnnotationError, match="cannot read as an npz"):
        builders.build("lsp", data, manual_dir=root, progress=False)
    with pytest.raises(ValueError, match="manual_dir"):
        builders.build("lsp", data, progress=False)
    with pytest.raises(KeyError, match="unknown dataset"):
        builders.build("nope", data)


def _corrupt_setup(root):
    _write_split(root, "lsp_dataset_test.npz", n=4)
    good = open(os.path.join(root, "imgs/lsp_dataset_test/im1.jpg"), "rb").read()
    with open(os.path.join(root, "imgs/lsp_dataset_test/im1.jpg"), "wb") as f:
        f.write(good[: len(good) // 2])  # truncated JPEG
    with open(os.path.join(root, "imgs/lsp_dataset_test/im2.jpg"), "wb") as f:
        f.write(b"garbage bytes")
    os.remove(os.path.join(root, "imgs/lsp_dataset_test/im3.jpg"))


def test_bad_images_skipped_and_counted_or_error(tmp_path):
    root = str(tmp_path / "m")
    _corrupt_setup(root)
    data = str(tmp_path / "d")
    builders.build("lsp", data, manual_dir=root, progress=False)
    src = builders.load_source("lsp", "test", data)
    assert len(src) == 1 and bytes(src[0]["imgname"]).endswith(b"im0.jpg")
    c = builders.build_metadata("lsp", data)["counts"]["test"]
    assert c["written"] == 1 and c["total"] == 4
    assert c["skipped_corrupt_image"] == 2 and c["skipped_missing_image"] == 1
    data2 = str(tmp_path / "d2")
    with pytest.raises(builders.BadImageError, match="im1.jpg"):
        builders.build("lsp", data2, manual_dir=root, on_bad_image="error", progress=False)
    with pytest.raises(FileNotFoundError, match="not built"):
        builders.load_source("lsp", "test", data2)
    for i in (0,):
        os.remove(os.path.join(root, f"imgs/lsp_dataset_test/im{i}.jpg"))
    with pytest.raises(ValueError, match="no example could be written"):
        builders.build("lsp", str(tmp_path / "d3"), manual_dir=root, progress=False)


def test_nan_labels_set_flags(tmp_path):
    root, data = str(tmp_path / "m"), str(tmp_path / "d")
    ann = _annotations(4, 0, None)
    ann["pose"][0, 5] = np.nan
    ann["S"][1, 2, 0] = np.nan
    ann["part"][2, 7, 1] = np.nan
    ann["center"][3, 0] = np.nan
    _write_split(root, "lsp_dataset_test.npz", n=4, pose=ann["pose"], S=ann["S"],
                 part=ann["part"], center=ann["center"], openpose=ann["openpose"],
                 shape=ann["shape"], scale=ann["scale"])
    builders.build("lsp", data, manual_dir=root, progress=False)
    got = _by_name(builders.load_source("lsp", "test", data))
    assert len(got) == 3  # NaN centre -> skipped
    r0, r1, r2 = (got[f"imgs/lsp_dataset_test/im{i}.jpg"] for i in range(3))
    assert r0["has_smpl"] == 0 and not np.any(r0["pose"]) and not np.any(r0["betas"])
    assert r0["has_pose_3d"] == 1
    assert r1["has_pose_3d"] == 0 and not np.any(r1["joints_3d"]) and r1["has_smpl"] == 1
    np.testing.assert_array_equal(r2["keypoints_2d"][25 + 7], 0.0)
    np.testing.assert_allclose(r2["keypoints_2d"][25 + 6], ann["part"][2, 6], rtol=1e-6)
    assert np.all(np.isfinite(r2["keypoints_2d"]))
    c = builders.build_metadata("lsp", data)["counts"]["test"]
    assert (c["skipped_bad_box"], c["nan_smpl"], c["nan_pose_3d"], c["nan_keypoints"]) == (1, 1, 1, 1)
    assert c["written"] == 3 and c["has_smpl"] == 2 and c["has_pose_3d"] == 2


def test_interrupted_build_is_not_complete_and_rebuilds(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    root, data = str(tmp_path / "m"), str(tmp_path / "d")
    _write_split(root, "lsp_dataset_test.npz", n=4)
    orig = real.annotation_record
    calls = {"n": 0}

    def dying(ann, i, counts=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash mid-build")
        return orig(ann, i, counts)

    monkeypatch.setattr(real, "annotation_record", dying)
    with pytest.raises(RuntimeError, match="simulated crash"):
        builders.build("lsp", data, manual_dir=root, progress=False)
    monkeypatch.setattr(real, "annotation_record", orig)
    builder = tfds.builder("lsp", data_dir=data, file_format="array_record")
    assert not builder.is_prepared()
    with pytest.raises(FileNotFoundError, match="python -m imphmr_jax.data.build --dataset lsp"):
        builders.load_source("lsp", "test", data)

    # a KILLED build leaves an incomplete.* folder with partial files: still not complete
    stale = os.path.join(data, "lsp", "incomplete.ABC123_1.0.0")
    os.makedirs(stale)
    with open(os.path.join(stale, "lsp-test.array_record-00000-of-00001"), "wb") as f:
        f.write(b"\0" * 100)
    assert not tfds.builder("lsp", data_dir=data, file_format="array_record").is_prepared()
    with pytest.raises(FileNotFoundError, match="interrupted build"):
        builders.load_source("lsp", "test", data)

    builders.build("lsp", data, manual_dir=root, progress=False)  # re-run: clean rebuild
    assert not os.path.exists(stale)
    assert len(builders.load_source("lsp", "test", data)) == 4
    assert len(tfds.data_source("lsp", split="test", data_dir=data)) == 4
    # reuse with the same options; different options need overwrite
    builders.build("lsp", data, manual_dir=root, progress=False)
    with pytest.raises(ValueError, match="overwrite"):
        builders.build("lsp", data, manual_dir=root, precrop_margin=1.5, progress=False)
    builders.build("lsp", data, manual_dir=root, precrop_margin=1.5, overwrite=True,
                   progress=False)
    assert builders.build_metadata("lsp", data)["options"]["precrop_margin"] == 1.5


# ----------------------------------------------------------------------------- synthetic_humans

def _fake_synthetic_module():
    @dataclasses.dataclass(frozen=True)
    class SyntheticConfig:
        image_size: int = 256
        body: str = "default"
        fraction_2d_only: float = 0.2
        seed: int = 0

    def _image(cfg, value):
        buf = io.BytesIO()
        Image.new("RGB", (cfg.image_size, cfg.image_size), (value % 256, 0, 0)).save(buf, "JPEG")
        return buf.getvalue()

    def generate(config, split, num, *, batch_size=32, progress=True):
        for i in range(num):
            yield schema.empty_record(image=_image(config, i), imgname=f"{split}/{i}",
                                      betas=np.full(10, i, np.float32), has_smpl=1,
                                      scale=config.image_size / 200.0)

    def generate_multiview(config, split, num_people, num_views, **kw):
        for p in range(num_people):
            for v in range(num_views):
                yield schema.empty_record(image=_image(config, v), imgname=f"{split}/{p}/{v}",
                                          sequence=p, view=v, frame=0,
                                          extrinsics=np.eye(3, 4, dtype=np.float32),
                                          pose_world=np.zeros(72), transl_world=np.zeros(3))

    def generate_video(config, split, num_clips, num_frames, **kw):
        for c in range(num_clips):
            for t in range(num_frames):
                yield schema.empty_record(image=_image(config, t), imgname=f"{split}/{c}/{t}",
                                          sequence=c, frame=t, view=0,
                                          extrinsics=np.eye(3, 4, dtype=np.float32),
                                          pose_world=np.zeros(72), transl_world=np.zeros(3))

    mod = types.ModuleType("imphmr_jax.data.synthetic")
    mod.SyntheticConfig, mod.generate = SyntheticConfig, generate
    mod.generate_multiview, mod.generate_video = generate_multiview, generate_video
    return mod


def test_synthetic_builder_with_fake_generator(tmp_path, monkeypatch):
    import imphmr_jax.data as data_pkg

    fake = _fake_synthetic_module()
    monkeypatch.setitem(sys.modules, "imphmr_jax.data.synthetic", fake)
    monkeypatch.setattr(data_pkg, "synthetic", fake, raising=False)
    data = str(tmp_path / "d")
    builders.build("synthetic_humans", data, num_train=5, num_test=3, image_size=32,
                   progress=False)
    tr = builders.load_source("synthetic_humans", "train", data)
    assert len(tr) == 5 and len(builders.load_source("synthetic_humans", "test", data)) == 3
    for i in range(5):  # key order kept
        assert bytes(tr[i]["imgname"]) == f"train/{i}".encode()
        np.testing.assert_array_equal(tr[i]["betas"], i)
        assert _decode(tr[i]["image"]).shape == (32, 32, 3)
        assert "sequence" not in tr[i]
    meta = builders.build_metadata("synthetic_humans", data)
    assert meta["options"]["image_size"] == 32 and meta["counts"]["train"]["written"] == 5

    builders.build("synthetic_humans", data, config="multiview", num_train=2, num_test=1,
                   num_views=3, image_size=16, progress=False)
    mv = builders.load_source("synthetic_humans", "train", data, config="multiview")
    assert len(mv) == 6
    assert [(mv[i]["sequence"], mv[i]["view"]) for i in range(6)] == \
        [(p, v) for p in range(2) for v in range(3)]
    np.testing.assert_array_equal(mv[0]["extrinsics"], np.eye(3, 4))
    builders.build("synthetic_humans", data, config="video", num_train=1, num_test=1,
                   num_frames=4, image_size=16, progress=False)
    vid = builders.load_source("synthetic_humans", "test", data, config="video")
    assert [vid[i]["frame"] for i in range(4)] == [0, 1, 2, 3]
    with pytest.raises(FileNotFoundError, match="--config video"):
        builders.load_source("synthetic_humans", "train", str(tmp_path / "empty"), config="video")
    with pytest.raises(KeyError, match="no split"):
        builders.load_source("synthetic_humans", "validation", data)
    with pytest.raises(ValueError, match="no config"):
        builders.load_source("synthetic_humans", "train", data, config="nope")
    # an empty split is left out (TFDS cannot write one)
    data2 = str(tmp_path / "d2")
    builders.build("synthetic_humans", data2, num_train=2, num_test=0, image_size=16,
                   progress=False)
    assert len(builders.load_source("synthetic_humans", "train", data2)) == 2
    with pytest.raises(KeyError, match="no split 'test'"):
        builders.load_source("synthetic_humans", "test", data2)


def test_cli_builds_and_rejects_wrong_options(tmp_path, capsys):
    from imphmr_jax.data import build as cli

    root, data = str(tmp_path / "m"), str(tmp_path / "d")
    _write_split(root, "mpii_train_eft.npz", n=2)
    assert cli.main(["--dataset", "mpii_eft", "--data_dir", data, "--manual_dir", root,
                     "--precrop_margin", "1.5", "--on_bad_image", "error", "--no_progress"]) == 0
    assert '"written": 2' in capsys.readouterr().out
    src = builders.load_source("mpii_eft", "train", data)
    assert len(src) == 2 and src[0]["image"][:2] == b"\xff\xd8"
    with pytest.raises(ValueError, match="--num_train"):  # an InputError: one line from the CLI
        cli.main(["--dataset", "mpii_eft", "--data_dir", data, "--num_train", "3"])


def test_real_synthetic_renderer_tiny_build(tmp_path):
    synthetic = pytest.importorskip("imphmr_jax.data.synthetic")
    if not hasattr(synthetic, "generate"):
        pytest.skip("imphmr_jax.data.synthetic.generate not available yet")
    data = str(tmp_path / "d")
    builders.build("synthetic_humans", data, num_train=6, num_test=4, image_size=64,
                   body="default-small", progress=False)
    tr = builders.load_source("synthetic_humans", "train", data)
    assert len(tr) == 6 and len(builders.load_source("synthetic_humans", "test", data)) == 4
    r = tr[0]
    assert _decode(r["image"]).shape[:2] == (64, 64)
    assert np.all(np.isfinite(r["keypoints_2d"])) and r["keypoints_2d"].shape == (49, 3)
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in
               os.walk(os.path.join(data, "synthetic_humans")) for f in fs if "array_record" in f)
    print(f"synthetic_humans 64px: {size / 10:.0f} bytes per example on disk")


def test_lsp_masks_stored_and_cropped(tmp_path):
    root, data = str(tmp_path / "m"), str(tmp_path / "d")
    ann = _write_split(root, "lsp_dataset_test.npz", n=3)
    masks = []
    for i in range(3):
        m = np.zeros((64, 80) if i < 2 else (10, 10), np.uint8)  # sample 2: wrong size
        m[10 + i:30, 20:50] = 255
        _save_image(os.path.join(root, "upi-s1h", "masks", f"{i}.png"), m)
        masks.append(m > 0)
    maskname = np.array([f"masks/{i}.png" for i in range(3)])
    np.savez(os.path.join(root, "lsp_dataset_test.npz"), **dict(ann, maskname=maskname))
    builders.build("lsp", data, manual_dir=root, progress=False)
    recs = [builders.load_source("lsp", "test", data)[i] for i in range(3)]
    for i in range(2):
        assert recs[i]["has_mask"] == 1
        got = np.asarray(Image.open(io.BytesIO(recs[i]["mask"])))
        assert got.ndim == 2 and np.array_equal(got > 0, masks[i])
    assert recs[2]["has_mask"] == 0 and recs[2]["mask"] == b""
    assert builders.build_metadata("lsp", data)["counts"]["test"]["mask_size_mismatch"] == 1
    # pre-cropped: the mask is cropped with the image
    data2 = str(tmp_path / "d2")
    builders.build("lsp", data2, manual_dir=root, precrop_margin=1.0, progress=False)
    r = builders.load_source("lsp", "test", data2)[0]
    img, mask = _decode(r["image"]), np.asarray(Image.open(io.BytesIO(r["mask"])))
    assert img.shape[:2] == mask.shape
    from imphmr_jax.data.builders.base import crop_box
    x0, y0, x1, y1 = crop_box(ann["center"][0], np.float32(ann["scale"][0]), 1.0, 80, 64)
    assert np.array_equal(mask > 0, masks[0][y0:y1, x0:x1])


def test_no_tensorflow_imported():
    assert "tensorflow" not in sys.modules
