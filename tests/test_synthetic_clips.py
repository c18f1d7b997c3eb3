"""The synthetic video split (held-out monocular clips): labels agree with the images, the files
round-trip, the camera moves, detector keypoints have the asked-for noise and outliers."""
import numpy as np
import pytest

import smpl_jax
from imphmr_jax.cli import InputError
from imphmr_jax.geometry import camera as cam_lib
from neuhmr_jax.data import synthetic_clips as sc
from neuhmr_jax.default_job import mask_boxes


@pytest.fixture(scope="module")
def clips():
    return sc.render_clips(2, 5, image_size=48, progress=False)


@pytest.fixture(scope="module")
def body():
    return smpl_jax.load("default-small")


def test_ground_truth_silhouette_is_the_rendered_mask(clips, body):
    """The camera-frame labels (poses, betas, transl, K) re-rasterised give the rendered masks."""
    import jax.numpy as jnp
    from imphmr_jax.render import rasterize
    for clip in clips:
        verts = smpl_jax.forward(body, jnp.asarray(clip.poses), jnp.asarray(clip.betas),
                                 jnp.asarray(clip.transl)).vertices
        intr = np.asarray(cam_lib.intrinsics_from_matrix(clip.K))
        sil = np.asarray(rasterize.silhouette(verts, body.faces, intr, 48, 48)) > 0.5
        m = clip.masks
        iou = (sil & m).sum((1, 2)) / (sil | m).sum((1, 2))
        assert iou.min() > 0.98, iou
        assert m.any((1, 2)).all()


def test_the_camera_moves_and_people_differ(clips):
    for clip in clips:
        # the orbiting camera turns the root orientation in the camera frame from frame to frame
        assert np.abs(clip.poses[-1, 0] - clip.poses[0, 0]).max() > 1e-3
        assert np.allclose(clip.betas, clip.betas[:1])  # one person per clip
    assert not np.allclose(clips[0].betas[0], clips[1].betas[0])
    again = sc.render_clips(1, 5, image_size=48, progress=False)[0]
    np.testing.assert_array_equal(again.frames, clips[0].frames)  # deterministic


def test_files_round_trip(clips, tmp_path):
    from neuhmr_jax.data import inits
    from neuhmr_jax.data.video import parse_intrinsics
    d = sc.write_clips(clips, str(tmp_path / "clips"), settings={"x": 1})
    back = sc.read_clips(d)
    assert sc.clips_info(d)["settings"] == {"x": 1}
    for a, b in zip(clips, back):
        assert a.name == b.name and a.family == b.family
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.poses, b.poses)
        np.testing.assert_allclose(parse_intrinsics(str(tmp_path / "clips" / a.name /
                                                        "intrinsics.txt")), a.K, rtol=1e-6)
        gt = inits.load_npz(str(tmp_path / "clips" / a.name / sc.GT_FILE))
        np.testing.assert_array_equal(gt.transl, a.transl)
    with pytest.raises(InputError, match="not a synthetic clips folder"):
        sc.read_clips(str(tmp_path))
    with pytest.raises(InputError, match="no clip named"):
        sc.read_clips(d, ["nope"])


def test_detector_keypoints_noise_and_outliers():
    rng = np.random.default_rng(0)
    joints = np.concatenate([rng.uniform(-0.5, 0.5, (400, 24, 2)), np.full((400, 24, 1), 3.0)],
                            -1)
    K = np.array([[100.0, 0, 50], [0, 100, 50], [0, 0, 1]])
    exact = joints[..., :2] / 3.0 * 100 + 50
    kp, conf = sc.detector_keypoints(joints, K, np.random.default_rng(1), noise_px=2.0,
                                     outlier_prob=0.1, outlier_px=20.0)
    err = np.linalg.norm(kp - exact, axis=-1)
    outlier = err > 9.5  # outliers move >= 10 px; a 2-px Gaussian passes 9.5 px once in ~80k
    assert 0.08 < outlier.mean() < 0.12
    inlier = err[~outlier]
    assert abs(np.sqrt((inlier ** 2).mean() / 2) - 2.0) < 0.1  # per-coordinate std
    assert conf[outlier].max() <= 0.6 and conf[~outlier].min() >= 0.6
    # outside the image or behind the camera: confidence 0
    joints[0, 0] = [10.0, 0.0, 3.0]
    joints[0, 1] = [0.0, 0.0, -1.0]
    _, conf = sc.detector_keypoints(joints, K, np.random.default_rng(1), image_size=(100, 100))
    assert conf[0, 0] == 0 and conf[0, 1] == 0


def test_mask_boxes():
    m = np.zeros((2, 20, 30), bool)
    m[0, 5:10, 10:20] = True
    b = mask_boxes(m, margin=0.1)
    np.testing.assert_allclose(b[0], [9.0, 4.0, 21.0, 11.0])
    np.testing.assert_allclose(b[1], [0, 0, 30, 20])  # empty mask: the whole frame
