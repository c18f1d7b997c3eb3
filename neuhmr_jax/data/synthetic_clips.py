"""The synthetic video split: held-out monocular clips for NeuHMR's default job and evaluation.

A clip is one person the GHN never saw (the synthetic generator's `test` video stream, not the
`multiview_video` people the GHN trains on) performing a smooth motion, filmed by ONE camera that
orbits the person (`SyntheticConfig.video_orbit_prob = 1`): the camera moves, so every frame has
its own camera-frame pose. People look as the GHN's training people do (procedurally textured,
plain backgrounds, upright motion families, a new key pose every 5 frames at 10 frames/s:
`imphmr_jax.data.synthetic.MULTIVIEW_VIDEO_DEFAULTS`), no occluders.

On disk (`write_clips` / `read_clips`), one folder per clip, in the formats the command lines read:

    <dir>/clips.json                    {"clips": [names], "body": ..., "image_size": ..., ...}
    <dir>/<name>/frames/000000.png ...  the frames (`python -m neuhmr_jax.optimize --video`)
    <dir>/<name>/masks/000000.png ...   person masks (255 on the person; `--masks`)
    <dir>/<name>/intrinsics.txt         fx,fy,cx,cy (`--intrinsics`)
    <dir>/<name>/gt.npz                 ground truth as an init .npz (poses, betas, transl; camera
                                        frame) + K, fps, family

`detector_keypoints` turns the GT into what a 2D keypoint detector would give (Gaussian pixel
noise, outliers, low confidence on occluded-looking joints), the input of the keypoint-fitting
baseline.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Optional

import numpy as np
from PIL import Image

from imphmr_jax.cli import InputError, expand_path

CLIPS_FILE = "clips.json"
GT_FILE = "gt.npz"
NUM_JOINTS = 24


@dataclasses.dataclass
class SyntheticClip:
    """One held-out clip. T frames, (H, W) pixels, camera frame (x right, y down, z forward).

    frames (T, H, W, 3) uint8; masks (T, H, W) bool; K (3, 3) float32 (constant: the camera
    moves, its intrinsics do not); poses (T, 24, 3) axis-angle (root in the camera frame of each
    frame); betas (T, 10); transl (T, 3): `smpl_jax.forward(body, poses, betas, transl)` is the
    person in frame t's camera frame; family: the motion family; fps.
    """

    name: str
    frames: np.ndarray
    masks: np.ndarray
    K: np.ndarray
    poses: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    family: str
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])

    def gt_init(self):
        """The ground truth as an `Init` (e.g. to check a pipeline with a perfect estimator)."""
        from neuhmr_jax.data.inits import Init
        return Init(self.poses, self.betas, self.transl, source=f"{self.name} ground truth")


def clip_config(*, image_size: int = 128, body: str = "default-small", seed: int = 0):
    """The `SyntheticConfig` of the held-out clips (module docstring)."""
    from imphmr_jax.data.synthetic import MULTIVIEW_VIDEO_DEFAULTS, SyntheticConfig
    return SyntheticConfig(image_size=int(image_size), body=body, seed=int(seed),
                           video_orbit_prob=1.0, occluder_prob=0.0, image_format="png",
                           **MULTIVIEW_VIDEO_DEFAULTS)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def render_clips(num_clips: int, num_frames: int, *, split: str = "test", image_size: int = 128,
                 body: str = "default-small", seed: int = 0,
                 progress: bool = True) -> list[SyntheticClip]:
    """Render `num_clips` clips of `num_frames` frames (deterministic in seed, split, index)."""
    from imphmr_jax.data.synthetic import decode_mask, generate_video
    from imphmr_jax.data.synthetic.video import sample_clip
    if num_clips < 1 or num_frames < 2:
        raise ValueError(f"render_clips needs num_clips >= 1 and num_frames >= 2, got "
                         f"{num_clips}, {num_frames}")
    config = clip_config(image_size=image_size, body=body, seed=seed)
    records = list(generate_video(config, split, num_clips, num_frames, progress=progress))
    clips = []
    for c in range(num_clips):
        recs = records[c * num_frames:(c + 1) * num_frames]
        intr = np.asarray(recs[0]["intrinsics"], np.float32)
        K = np.array([[intr[0], 0, intr[2]], [0, intr[1], intr[3]], [0, 0, 1]], np.float32)
        clips.append(SyntheticClip(
            name=f"{split}_{c:03d}",
            frames=np.stack([_decode(r["image"]) for r in recs]),
            masks=np.stack([decode_mask(r["mask"]) for r in recs]),
            K=K,
            poses=np.stack([np.asarray(r["pose"], np.float32).reshape(NUM_JOINTS, 3)
                            for r in recs]),
            betas=np.stack([np.asarray(r["betas"], np.float32) for r in recs]),
            transl=np.stack([np.asarray(r["cam_t"], np.float32) for r in recs]),
            family=sample_clip(config, split, c, num_frames).family,
            fps=float(config.video_fps)))
    return clips


def _png(path: str, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def write_clips(clips, directory: str, *, body: str = "default-small", **info) -> str:
    """Write clips in the layout of the module docstring; returns the folder."""
    directory = expand_path(directory)
    os.makedirs(directory, exist_ok=True)
    for clip in clips:
        root = os.path.join(directory, clip.name)
        for sub in ("frames", "masks"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        for t in range(clip.num_frames):
            _png(os.path.join(root, "frames", f"{t:06d}.png"), clip.frames[t])
            _png(os.path.join(root, "masks", f"{t:06d}.png"),
                 np.where(clip.masks[t], 255, 0).astype(np.uint8))
        K = clip.K
        with open(os.path.join(root, "intrinsics.txt"), "w") as f:
            f.write(f"{K[0, 0]:.6f},{K[1, 1]:.6f},{K[0, 2]:.6f},{K[1, 2]:.6f}\n")
        np.savez(os.path.join(root, GT_FILE), poses=clip.poses, betas=clip.betas,
                 transl=clip.transl, K=K, fps=np.float32(clip.fps),
                 family=np.asarray(clip.family), source=np.asarray(f"{clip.name} ground truth"))
    meta = {"clips": [c.name for c in clips], "body": body,
            "image_size": list(clips[0].frames.shape[1:3]) if clips else None, **info}
    with open(os.path.join(directory, CLIPS_FILE), "w") as f:
        json.dump(meta, f, indent=1)
    return directory


def clips_info(directory: str) -> dict:
    """The clips.json of a clips folder (InputError when the folder is not one)."""
    directory = expand_path(directory)
    path = os.path.join(directory, CLIPS_FILE)
    if not os.path.isfile(path):
        raise InputError(f"{directory} is not a synthetic clips folder (no {CLIPS_FILE}); write "
                         "one with `neuhmr_jax.data.synthetic_clips.write_clips` or the default "
                         "job (`python -m neuhmr_jax.default_job`)")
    try:
        with open(path) as f:
            info = json.load(f)
        if not isinstance(info.get("clips"), list):
            raise ValueError("no 'clips' list")
    except (ValueError, OSError) as e:
        raise InputError(f"{path} is not a readable clips index ({e})") from None
    return info


def read_clip(directory: str, name: str) -> SyntheticClip:
    """One clip of a clips folder, frames and masks decoded."""
    from neuhmr_jax.data.video import read_frames
    root = os.path.join(expand_path(directory), name)
    gt_path = os.path.join(root, GT_FILE)
    if not os.path.isfile(gt_path):
        raise FileNotFoundError(f"clip {name}: {gt_path} does not exist")
    try:
        with np.load(gt_path, allow_pickle=False) as d:
            gt = {k: d[k] for k in d.files}
        poses, betas, transl, K = gt["poses"], gt["betas"], gt["transl"], gt["K"]
    except Exception as e:  # noqa: BLE001 - any reading failure names the file
        raise InputError(f"{gt_path} is not a readable clip ground truth "
                         f"({type(e).__name__}: {e})") from None
    frames = read_frames(os.path.join(root, "frames"))
    masks = read_frames(os.path.join(root, "masks"))
    if len(frames) != len(poses) or len(masks) != len(poses):
        raise InputError(f"clip {name}: {len(frames)} frames and {len(masks)} masks for "
                         f"{len(poses)} ground-truth poses in {gt_path}")
    return SyntheticClip(
        name=name, frames=np.stack(list(frames)),
        masks=np.stack([np.asarray(m).max(axis=-1) > 127 for m in masks]),
        K=np.asarray(K, np.float32), poses=np.asarray(poses, np.float32),
        betas=np.asarray(betas, np.float32), transl=np.asarray(transl, np.float32),
        family=str(gt.get("family", np.asarray("unknown"))), fps=float(gt.get("fps", 10.0)))


def read_clips(directory: str, names: Optional[list] = None) -> list[SyntheticClip]:
    """Every clip of a clips folder (or those named)."""
    info = clips_info(directory)
    wanted = info["clips"] if names is None else list(names)
    missing = sorted(set(wanted) - set(info["clips"]))
    if missing:
        raise InputError(f"{directory}: no clip named {missing} (clips: {info['clips']})")
    return [read_clip(directory, n) for n in wanted]


def gt_joints(body, clip: SyntheticClip) -> np.ndarray:
    """(T, 24, 3) camera-frame SMPL joints of the clip's ground truth."""
    import jax.numpy as jnp
    import smpl_jax
    out = smpl_jax.forward(body, jnp.asarray(clip.poses), jnp.asarray(clip.betas),
                           jnp.asarray(clip.transl))
    return np.asarray(out.joints[:, :NUM_JOINTS])


def detector_keypoints(joints_cam, K, rng: np.random.Generator, *, noise_px: float = 2.0,
                       outlier_prob: float = 0.05, outlier_px: float = 20.0,
                       image_size=None) -> tuple[np.ndarray, np.ndarray]:
    """What a 2D keypoint detector gives for the projections of `joints_cam` (T, 24, 3).

    Each joint's projection gets Gaussian noise of std `noise_px` pixels; with probability
    `outlier_prob` a joint is instead displaced by `outlier_px`·U(0.5, 1.5) in a random direction
    (a swapped or missed detection) and its confidence drawn low (U(0.2, 0.6)); the others'
    confidence is U(0.7, 1.0). Joints behind the camera or outside the image (when image_size
    (H, W) is given) get confidence 0.
    Returns: keypoints (T, 24, 2) pixels, confidence (T, 24) in [0, 1].
    """
    j = np.asarray(joints_cam, np.float64)
    K = np.asarray(K, np.float64)
    z = j[..., 2]
    uv = np.stack([K[0, 0] * j[..., 0] / np.maximum(z, 1e-6) + K[0, 2],
                   K[1, 1] * j[..., 1] / np.maximum(z, 1e-6) + K[1, 2]], -1)
    kp = uv + rng.normal(0.0, noise_px, uv.shape)
    outlier = rng.random(z.shape) < outlier_prob
    angle = rng.uniform(0, 2 * np.pi, z.shape)
    length = outlier_px * rng.uniform(0.5, 1.5, z.shape)
    kp = np.where(outlier[..., None],
                  uv + length[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1), kp)
    conf = np.where(outlier, rng.uniform(0.2, 0.6, z.shape), rng.uniform(0.7, 1.0, z.shape))
    conf = np.where(z > 1e-3, conf, 0.0)
    if image_size is not None:
        h, w = image_size
        inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
        conf = np.where(inside, conf, 0.0)
    return kp.astype(np.float32), conf.astype(np.float32)
