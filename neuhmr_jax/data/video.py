"""A user's video for NeuHMR: its frames (a folder of images or a video file), writing result
videos, and the camera intrinsics given on the command line or in a file (docs/neuhmr_inputs.md).

    frames = read_frames("clip.mp4")          # or a folder of frames: 000000.jpg, 000001.jpg, ...
    len(frames), frames.image_size, frames.fps
    image = frames[12]                        # (H, W, 3) uint8, decoded on demand
    K = parse_intrinsics("1000,1000,640,360") # or a .txt / .json / .npy file
    written = write_video("out/result.mp4", images, fps=frames.fps or 30)

Frames are read lazily: a 1,000-frame video is never held in memory at once. A video is decoded
with imageio's FFMPEG plugin (the ffmpeg binary of the imageio-ffmpeg wheel): reading frames in
order streams through the file, a jump backwards re-opens it at the nearest earlier key frame.
A folder's images are taken in natural order (frame2.png before frame10.png).

Errors a user can cause (a missing path, an unreadable file or frame, frames of different sizes,
an intrinsics string or file that is not a camera) raise FileNotFoundError with the path or
`InputError` naming the file and what was expected.
"""
from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from typing import Iterable, Iterator, Optional

import numpy as np

from imphmr_jax import demo
from imphmr_jax.cli import InputError, error_message, expand_path

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".gif")
IMAGE_EXTENSIONS = demo.IMAGE_EXTENSIONS


def natural_key(name: str):
    """Sort key putting 'frame2.png' before 'frame10.png' (digit runs compared as numbers)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower())
            for part in re.split(r"(\d+)", name) if part != ""]


# ------------------------------------------------------------------------------------- reading
class Frames:
    """The frames of a video, decoded on demand.

    Attributes:
      path: the folder or video file.
      kind: 'images' (a folder of frames or one image) or 'video'.
      names: one name per frame: the image's file name, or '%06d' of the frame index (0-based)
        for a video file (what a boxes file names frames by, see `neuhmr_jax.data.inits`).
      image_size: (H, W) pixels of every frame.
      fps: frames per second when the file says (video files), else None.

    `frames[i]` (negative i counts from the end) is an (H, W, 3) uint8 RGB array; iterating
    yields every frame in order. `close()` (or a `with` block) ends a video's decoder; reading
    again re-opens it.
    """

    def __init__(self, path: str, kind: str, names: list, files: Optional[list] = None,
                 fps: Optional[float] = None):
        self.path = path
        self.kind = kind
        self.names = list(names)
        self.fps = fps
        self._files = files
        self._reader = None
        first = self[0]
        self.image_size = tuple(int(v) for v in first.shape[:2])

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        fps = "" if self.fps is None else f", fps={self.fps:g}"
        return (f"Frames({self.path!r}, {len(self)} {self.kind} frames of "
                f"{self.image_size[1]}x{self.image_size[0]}{fps})")

    def _index(self, index) -> int:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame indices are integers, got {type(index).__name__}")
        i = int(index) + (len(self) if index < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"frame {int(index)} of a {len(self)}-frame video ({self.path})")
        return i

    def __getitem__(self, index) -> np.ndarray:
        i = self._index(index)
        image = self._read_file(i) if self.kind == "images" else self._read_video(i)
        size = getattr(self, "image_size", None)
        if size is not None and tuple(image.shape[:2]) != size:
            raise InputError(f"{self._where(i)} is {image.shape[1]}x{image.shape[0]} pixels but "
                             f"the first frame is {size[1]}x{size[0]}: every frame of a video "
                             "must have the same size")
        return image

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def _where(self, i: int) -> str:
        if self.kind == "images":
            return self._files[i]
        return f"frame {i} of {self.path}"

    def _read_file(self, i: int) -> np.ndarray:
        try:
            return demo.read_image(self._files[i])
        except InputError as e:
            raise InputError(f"frame {i} ({self._files[i]}): {e}") from None

    def _read_video(self, i: int) -> np.ndarray:
        if self._reader is None:
            self._reader = _open_video(self.path)
        try:
            image = self._reader.read(index=i)
        except IndexError:
            raise InputError(f"{self._where(i)} cannot be read: the video ends earlier than its "
                             f"{len(self)} frames") from None
        except Exception as e:  # noqa: BLE001 - the decoder raises many types for a bad stream
            raise InputError(f"{self._where(i)} cannot be decoded ({_short_error(e)})") from None
        return _as_rgb_uint8(image, self._where(i))

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            finally:
                self._reader = None

    def __enter__(self) -> "Frames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _short_error(e: BaseException, limit: int = 200) -> str:
    """The exception as one line, its end kept when long (ffmpeg's messages begin with its whole
    build configuration; the reason is last)."""
    msg = error_message(e)
    if "=== stderr ===" in msg:
        head, _, tail = msg.partition("=== stderr ===")
        msg = head.strip() + ": ..." + tail[-limit:]
    elif len(msg) > limit:
        msg = "..." + msg[-limit:]
    return f"{type(e).__name__}: {msg}"


def _as_rgb_uint8(image, where: str) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4) or a.dtype != np.uint8:
        raise InputError(f"{where} is not an 8-bit RGB image (got {a.dtype}{a.shape})")
    return np.ascontiguousarray(a[..., :3])


def _open_video(path: str):
    import imageio.v3 as iio

    try:
        return iio.imopen(path, "r", plugin="FFMPEG")
    except Exception as e:  # noqa: BLE001 - imageio raises many types for non-videos
        raise InputError(f"cannot open {path} as a video ({_short_error(e)})") from None


def _video_frames(path: str) -> Frames:
    import imageio.v3 as iio
    import imageio_ffmpeg

    try:
        meta = iio.immeta(path, plugin="FFMPEG")
        count, _ = imageio_ffmpeg.count_frames_and_secs(path)
    except Exception as e:  # noqa: BLE001 - a corrupt or non-video file
        raise InputError(f"cannot read {path} as a video ({_short_error(e)})") from None
    if count < 1:
        raise InputError(f"{path} holds no video frames")
    fps = meta.get("fps")
    fps = float(fps) if fps is not None and np.isfinite(fps) and fps > 0 else None
    return Frames(path, "video", [f"{i:06d}" for i in range(int(count))], fps=fps)


def read_frames(path) -> Frames:
    """The frames of a video file (.mp4, .mov, .avi, ...) or of a folder of images.

    Args:
      path: a video file; a folder of frames (.jpg / .png / ... files, in natural order: other
        files are ignored); or a single image (a 1-frame video).
    Returns:
      A lazy `Frames` (len, frames[i] -> (H, W, 3) uint8, image_size, fps for video files).
    Raises:
      FileNotFoundError: the path does not exist.
      InputError: no frames in the folder, a file that is not a readable video or image, or the
        first frame cannot be decoded (later frames raise it when they are read).
    """
    path = expand_path(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"video or frames folder {path} does not exist")
    if os.path.isdir(path):
        files = sorted((f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)
                        and os.path.isfile(os.path.join(path, f))), key=natural_key)
        if not files:
            raise InputError(f"no frames ({', '.join(IMAGE_EXTENSIONS)}) in the folder {path}")
        return Frames(path, "images", files, files=[os.path.join(path, f) for f in files])
    lower = path.lower()
    if lower.endswith(IMAGE_EXTENSIONS) and not lower.endswith(".gif"):
        return Frames(path, "images", [os.path.basename(path)], files=[path])
    return _video_frames(path)


# ------------------------------------------------------------------------------------- writing
@functools.lru_cache(maxsize=1)
def _mp4_encoder_available() -> bool:
    """True when imageio-ffmpeg's ffmpeg can encode H.264 mp4 here (probed once: ffmpeg reports
    a missing encoder only on its stderr, so two tiny frames are encoded to a temporary file)."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
        with tempfile.TemporaryDirectory() as tmp:
            probe = os.path.join(tmp, "probe.mp4")
            _encode_mp4(probe, iter([np.zeros((16, 16, 3), np.uint8)] * 2), 16, 16, 10.0,
                        ffmpeg_log_level="quiet")
            return os.path.isfile(probe) and os.path.getsize(probe) > 0
    except Exception:  # noqa: BLE001 - no binary, no encoder, a broken install: fall back
        return False


def _encode_mp4(path: str, frames: Iterator[np.ndarray], height: int, width: int, fps: float,
                **kwargs) -> int:
    """H.264 mp4 through imageio-ffmpeg's `write_frames` (odd sizes scaled to even, as yuv420p
    requires). Returns the number of frames written."""
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(path, (width, height), fps=fps, codec="libx264",
                                         macro_block_size=2, **kwargs)
    writer.send(None)
    count = 0
    try:
        for k, frame in enumerate(frames):
            writer.send(np.ascontiguousarray(_checked_frame(frame, k, (height, width))))
            count += 1
    finally:
        writer.close()
    return count


def _checked_frame(frame, k: int, size) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3:
        raise InputError(f"write_video: frame {k} must be an (H, W, 3) uint8 array, got "
                         f"{a.dtype}{a.shape}")
    if size is not None and tuple(a.shape[:2]) != tuple(size):
        raise InputError(f"write_video: frame {k} is {a.shape[1]}x{a.shape[0]} but the first "
                         f"frame is {size[1]}x{size[0]}")
    return a


def _write_gif(path: str, frames: Iterator[np.ndarray], size, fps: float) -> None:
    from PIL import Image

    images = (Image.fromarray(_checked_frame(f, k, size)) for k, f in enumerate(frames))
    first = next(images)
    # GIF frame durations are in 1/100 s; Pillow takes milliseconds.
    first.save(path, save_all=True, append_images=images, loop=0,
               duration=max(10, int(round(1000.0 / fps / 10.0)) * 10), optimize=False)


def write_video(path, frames_iter: Iterable[np.ndarray], fps: float) -> str:
    """Write (H, W, 3) uint8 frames as an H.264 mp4 (imageio-ffmpeg); where this machine cannot
    encode mp4 (no ffmpeg binary or no H.264 encoder), as an animated GIF (Pillow) next to it.

    Args:
      path: the .mp4 to write (parent folders are created).
      frames_iter: the frames, any iterable (consumed once; all the same size).
      fps: frames per second (> 0).
    Returns:
      The path written: `path`, or `path` with the suffix .gif when falling back.
    Raises:
      InputError: no frames, fps <= 0, or a frame that is not (H, W, 3) uint8 of the first
        frame's size.
    """
    path = expand_path(os.fspath(path))
    fps = float(fps)
    if not np.isfinite(fps) or fps <= 0:
        raise InputError(f"write_video: fps must be > 0, got {fps}")
    frames = iter(frames_iter)
    try:
        first = _checked_frame(next(frames), 0, None)
    except StopIteration:
        raise InputError(f"write_video: no frames to write to {path}") from None
    height, width = first.shape[:2]

    def all_frames():
        yield first
        yield from frames

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if _mp4_encoder_available():
        _encode_mp4(path, all_frames(), height, width, fps)
        if not (os.path.isfile(path) and os.path.getsize(path) > 0):
            raise OSError(f"ffmpeg wrote nothing to {path} (see its messages above)")
        return path
    gif = os.path.splitext(path)[0] + ".gif"
    _write_gif(gif, all_frames(), (height, width), fps)
    return gif


# ------------------------------------------------------------------------------------- intrinsics
_K_FORMS = ("'fx,fy,cx,cy' (pixels), or a .txt / .json / .npy file holding a 3x3 matrix or the "
            "4 numbers fx, fy, cx, cy")


def _intrinsics_from_numbers(values, where: str) -> np.ndarray:
    try:
        a = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: intrinsics must be numbers: {_K_FORMS}") from None
    if a.shape in ((4,), (1, 4), (4, 1)):
        fx, fy, cx, cy = a.reshape(4)
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    elif a.shape in ((3, 3), (9,), (1, 9)):
        K = a.reshape(3, 3)
    else:
        raise InputError(f"{where}: intrinsics must be 4 numbers or a 3x3 matrix, got "
                         f"{a.size} numbers of shape {a.shape}; give {_K_FORMS}")
    if not np.all(np.isfinite(K)):
        raise InputError(f"{where}: the intrinsics contain NaN or infinite values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{where}: focal lengths must be > 0 pixels, got fx={K[0, 0]:g}, "
                         f"fy={K[1, 1]:g}")
    if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-6):
        raise InputError(f"{where}: the last row of K must be [0, 0, 1], got {K[2].tolist()}")
    if abs(K[0, 1]) > 1e-6 * K[0, 0] or abs(K[1, 0]) > 1e-6 * K[1, 1]:
        raise InputError(f"{where}: K has skew ({K[0, 1]:g}); only zero-skew cameras "
                         "[[fx, 0, cx], [0, fy, cy], [0, 0, 1]] are supported")
    return K.astype(np.float32)


def _json_numbers(data, where: str):
    if isinstance(data, dict):
        keys = {k.lower(): v for k, v in data.items()}
        if all(k in keys for k in ("fx", "fy", "cx", "cy")):
            return [keys[k] for k in ("fx", "fy", "cx", "cy")]
        for k in ("k", "intrinsics", "camera_matrix"):
            if k in keys:
                return _json_numbers(keys[k], where)
        raise InputError(f"{where}: a JSON object needs 'fx', 'fy', 'cx', 'cy' or 'K' "
                         f"(keys present: {sorted(data)})")
    return data


def parse_intrinsics(spec) -> np.ndarray:
    """The camera matrix K (3, 3) float32 from what a user gives.

    Args:
      spec: 'fx,fy,cx,cy' (commas or spaces, pixels); a path to a .txt (3 rows of 3 numbers or 4
        numbers, commas or spaces, '#' comments), a .json (a 3x3 list, a list of 4, or an object
        with fx, fy, cx, cy or K) or a .npy (3x3 or (4,)) file; or already a 3x3 / (4,) array.
    Returns:
      (3, 3) float32 [[fx, 0, cx], [0, fy, cy], [0, 0, 1]].
    Raises:
      FileNotFoundError: a path that does not exist.
      InputError: anything that is not a zero-skew camera with positive focal lengths, naming the
        file or the string.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return _intrinsics_from_numbers(spec, "intrinsics")
    text = os.fspath(spec).strip()
    if not text:
        raise InputError(f"intrinsics are empty: give {_K_FORMS}")
    parts = [p for p in re.split(r"[,\s]+", text.strip("[]() ")) if p]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = None
    if numbers is not None:
        return _intrinsics_from_numbers(numbers, f"intrinsics {text!r}")
    path = expand_path(text)
    if not os.path.exists(path):
        raise FileNotFoundError(f"intrinsics file {path} does not exist (give {_K_FORMS})")
    if os.path.isdir(path):
        raise InputError(f"intrinsics {path} is a folder: give {_K_FORMS}")
    lower = path.lower()
    if lower.endswith(".npy"):
        try:
            values = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any reading failure means "not an .npy"
            raise InputError(f"{path} is not a readable .npy file ({type(e).__name__}: "
                             f"{error_message(e)})") from None
        return _intrinsics_from_numbers(values, path)
    try:
        with open(path, encoding="utf-8") as f:
            content = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not a readable text file ({type(e).__name__}: "
                         f"{error_message(e)})") from None
    if lower.endswith(".json"):
        try:
            data = json.loads(content)
        except json.JSONDecodeError as e:
            raise InputError(f"{path} is not valid JSON (line {e.lineno}: {e.msg})") from None
        return _intrinsics_from_numbers(_json_numbers(data, path), path)
    lines = [line.split("#", 1)[0] for line in content.splitlines()]
    tokens = [t for line in lines for t in re.split(r"[,\s;\[\]]+", line) if t]
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise InputError(f"{path}: expected numbers (a 3x3 matrix or fx fy cx cy), found "
                         f"{' '.join(tokens)[:60]!r}") from None
    return _intrinsics_from_numbers(values, path)
