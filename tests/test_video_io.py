"""`neuhmr_jax.data.video`: frames from a folder of images and from an mp4 (imageio-ffmpeg),
lazily and in natural order; writing mp4 and the GIF fallback when no encoder is available; the
intrinsics a user gives as a string or a .txt / .json / .npy file, and the errors for bad ones."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from imphmr_jax.cli import InputError
from neuhmr_jax.data import video

H, W, N = 32, 48, 5


def _frames():
    """N distinguishable frames: frame k is a flat grey (40·k + 20) with a bright square."""
    out = np.zeros((N, H, W, 3), np.uint8)
    for k in range(N):
        out[k] = 40 * k + 20
        out[k, 4:12, 4 + 6 * k:12 + 6 * k] = 250
    return out


@pytest.fixture(scope="module")
def frames():
    return _frames()


@pytest.fixture
def encoder_cache():
    video._mp4_encoder_available.cache_clear()
    yield
    video._mp4_encoder_available.cache_clear()


# ------------------------------------------------------------------------------ folders
def test_png_folder_natural_order_and_lazy(tmp_path, frames):
    names = ["frame1.png", "frame2.png", "frame3.png", "frame10.png", "frame20.png"]
    for k, name in enumerate(names):
        Image.fromarray(frames[k]).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    f = video.read_frames(tmp_path)
    assert len(f) == N and f.kind == "images" and f.fps is None
    assert f.image_size == (H, W)
    assert f.names == names  # frame10 after frame3, not after frame1
    for k in range(N):
        np.testing.assert_array_equal(f[k], frames[k])
    np.testing.assert_array_equal(f[-1], frames[-1])
    assert [img.shape for img in f] == [(H, W, 3)] * N
    with pytest.raises(IndexError):
        f[N]


def test_folder_errors_name_the_file(tmp_path, frames):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        video.read_frames(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no frames"):
        video.read_frames(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(frames[0]).save(bad / "000000.png")
    (bad / "000001.png").write_bytes(b"this is not a png")
    Image.fromarray(frames[0][:16]).save(bad / "000002.png")
    f = video.read_frames(bad)
    assert len(f) == 3
    with pytest.raises(InputError, match="000001.png"):
        f[1]
    with pytest.raises(InputError, match=r"000002\.png.*48x16.*48x32"):
        f[2]


# ------------------------------------------------------------------------------ video files
def test_mp4_round_trip(tmp_path, frames, encoder_cache):
    path = video.write_video(tmp_path / "clip.mp4", iter(frames), fps=12)
    assert path == str(tmp_path / "clip.mp4") and os.path.getsize(path) > 0
    f = video.read_frames(path)
    assert len(f) == N and f.kind == "video"
    assert f.fps == pytest.approx(12.0)
    assert f.image_size == (H, W)
    assert f.names[3] == "000003"
    # Lossy H.264: compare the flat grey level of each frame (40 apart).
    levels = [float(np.median(img)) for img in f]
    np.testing.assert_allclose(levels, 40 * np.arange(N) + 20, atol=6)
    # Random access, backwards too.
    assert abs(float(np.median(f[4])) - 180) < 6 and abs(float(np.median(f[1])) - 60) < 6
    assert f[0].dtype == np.uint8 and f[0].shape == (H, W, 3)
    f.close()
    assert abs(float(np.median(f[2])) - 100) < 6  # re-opened after close


def test_unreadable_video_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 not a video at all" * 10)
    with pytest.raises(InputError, match="broken.mp4"):
        video.read_frames(bad)


def test_gif_fallback_when_no_encoder(tmp_path, frames, monkeypatch, encoder_cache):
    import imageio_ffmpeg

    def no_ffmpeg():
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_ffmpeg)
    written = video.write_video(tmp_path / "out" / "clip.mp4", (fr for fr in frames), fps=10)
    assert written == str(tmp_path / "out" / "clip.gif")
    assert not os.path.exists(tmp_path / "out" / "clip.mp4")
    with Image.open(written) as gif:
        assert gif.n_frames == N and gif.size == (W, H)
        assert gif.info["duration"] == 100
        gif.seek(3)
        assert abs(float(np.median(np.asarray(gif.convert("RGB")))) - 140) < 6


def test_write_video_errors(tmp_path, frames):
    with pytest.raises(InputError, match="no frames"):
        video.write_video(tmp_path / "a.mp4", [], fps=10)
    with pytest.raises(InputError, match="fps"):
        video.write_video(tmp_path / "a.mp4", frames, fps=0)
    with pytest.raises(InputError, match="frame 1"):
        video.write_video(tmp_path / "a.mp4", [frames[0], frames[1][:10]], fps=10)


# ------------------------------------------------------------------------------ intrinsics
K_WANT = np.array([[500.0, 0, 24.0], [0, 510.0, 16.0], [0, 0, 1]], np.float32)


def test_intrinsics_every_form(tmp_path):
    for spec in ("500,510,24,16", " 500 510 24 16 ", "[500, 510, 24, 16]"):
        K = video.parse_intrinsics(spec)
        assert K.dtype == np.float32 and K.shape == (3, 3)
        np.testing.assert_array_equal(K, K_WANT)
    (tmp_path / "k3.txt").write_text("# camera\n500 0 24\n0 510 16\n0 0 1\n")
    (tmp_path / "k4.txt").write_text("500, 510, 24, 16\n")
    (tmp_path / "k.json").write_text(json.dumps(K_WANT.tolist()))
    (tmp_path / "k4.json").write_text(json.dumps({"fx": 500, "fy": 510, "cx": 24, "cy": 16}))
    (tmp_path / "kk.json").write_text(json.dumps({"K": K_WANT.tolist()}))
    np.save(tmp_path / "k.npy", K_WANT.astype(np.float64))
    np.save(tmp_path / "k4.npy", np.array([500, 510, 24, 16.0]))
    for name in ("k3.txt", "k4.txt", "k.json", "k4.json", "kk.json", "k.npy", "k4.npy"):
        np.testing.assert_array_equal(video.parse_intrinsics(str(tmp_path / name)), K_WANT,
                                      err_msg=name)
    np.testing.assert_array_equal(video.parse_intrinsics(K_WANT), K_WANT)
    np.testing.assert_array_equal(video.parse_intrinsics([500, 510, 24, 16]), K_WANT)


def test_intrinsics_errors(tmp_path):
    with pytest.raises(InputError, match="4 numbers or a 3x3"):
        video.parse_intrinsics("500,510,24")
    with pytest.raises(InputError, match="focal lengths must be > 0"):
        video.parse_intrinsics("0,510,24,16")
    with pytest.raises(InputError, match="NaN"):
        video.parse_intrinsics("nan,510,24,16")
    with pytest.raises(InputError, match="empty"):
        video.parse_intrinsics("")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        video.parse_intrinsics(str(tmp_path / "nope.txt"))
    (tmp_path / "words.txt").write_text("fx = 500\n")
    with pytest.raises(InputError, match="words.txt.*expected numbers"):
        video.parse_intrinsics(str(tmp_path / "words.txt"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json is not valid JSON"):
        video.parse_intrinsics(str(tmp_path / "bad.json"))
    (tmp_path / "obj.json").write_text(json.dumps({"focal": 500}))
    with pytest.raises(InputError, match="obj.json.*'fx'"):
        video.parse_intrinsics(str(tmp_path / "obj.json"))
    np.save(tmp_path / "six.npy", np.ones(6))
    with pytest.raises(InputError, match="six.npy.*6 numbers"):
        video.parse_intrinsics(str(tmp_path / "six.npy"))
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(InputError, match="junk.npy is not a readable .npy"):
        video.parse_intrinsics(str(tmp_path / "junk.npy"))
    skew = K_WANT.copy()
    skew[0, 1] = 3.0
    with pytest.raises(InputError, match="skew"):
        video.parse_intrinsics(skew)
    last = K_WANT.copy()
    last[2, 0] = 1.0
    with pytest.raises(InputError, match=r"last row"):
        video.parse_intrinsics(last)
