"""`synthetic_humans`: rendered default-body people with exact labels (no files needed).

Builder configs:
  * `default`   single images; `num_train` / `num_test` = number of images.
  * `multiview` `num_views` cameras per person; `num_train` / `num_test` = number of PEOPLE
                (records = people * views), records carry VARIANT_FIELDS (sequence = person,
                view = camera, frame = 0).
  * `video`     clips of `num_frames` frames; `num_train` / `num_test` = number of CLIPS
                (records = clips * frames), VARIANT_FIELDS (sequence = clip, frame, view = 0).
  * `multiview_video`  each person performs a clip of `num_frames` frames seen by a ring of
                `num_views` fixed cameras (ZJU-MoCap-like); `num_train` / `num_test` = number of
                PEOPLE (records = people * frames * views, ordered person, frame, view; the test
                split's people are other identities), VARIANT_FIELDS (sequence = person, frame,
                view). Procedurally textured people over plain backgrounds by default
                (`synthetic.multiview_video.MULTIVIEW_VIDEO_DEFAULTS`, overridable through
                `synthetic_options`).
Image size, body, seed and fraction of 2D-only samples (and any other SyntheticConfig field via
`synthetic_options={...}`) are passed to `imphmr_jax.data.synthetic.SyntheticConfig`; options left
None keep that config's defaults.
Records are produced by `imphmr_jax.data.synthetic.generate / generate_multiview / generate_video`
and validated against `schema` before writing.
"""
from __future__ import annotations

import dataclasses
import importlib

import tensorflow_datasets as tfds
from tqdm import tqdm

from imphmr_jax.data import schema
from imphmr_jax.data.builders.base import Counts, HumanBuilder

KINDS = ("single", "multiview", "video", "multiview_video")


@dataclasses.dataclass(eq=False)
class SyntheticHumansConfig(tfds.core.BuilderConfig):
    kind: str = "single"


def _synthetic_module():
    try:
        return importlib.import_module("imphmr_jax.data.synthetic")
    except ImportError as e:
        raise ImportError("synthetic_humans needs imphmr_jax.data.synthetic (the synthetic "
                          f"renderer), which could not be imported: {e}") from e


class SyntheticHumans(HumanBuilder):
    """Synthetic humans rendered from the embedded default body, with exact 2D/3D/SMPL/silhouette
    and camera labels; single-image, multi-view and video configs."""

    name = "synthetic_humans"
    BUILDER_CONFIGS = [
        SyntheticHumansConfig(name="default", kind="single",
                              description="single images, one person each"),
        SyntheticHumansConfig(name="multiview", kind="multiview",
                              description="each person seen by num_views cameras"),
        SyntheticHumansConfig(name="video", kind="video",
                              description="clips of num_frames frames"),
        SyntheticHumansConfig(name="multiview_video", kind="multiview_video",
                              description="people performing clips of num_frames frames, each "
                                          "frame seen by num_views fixed cameras"),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "default"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release (imphmr_jax record schema).",
                     "1.1.0": "The test split is fully labelled (no 2D-only records)."}

    def __init__(self, *, num_train: int = 1000, num_test: int = 200,
                 image_size: int | None = None, body: str | None = None, seed: int | None = None,
                 fraction_2d_only: float | None = None, num_views: int = 4, num_frames: int = 8,
                 batch_size: int = 32, synthetic_options: dict | None = None, **kwargs):
        for key, v in (("num_train", num_train), ("num_test", num_test),
                       ("num_views", num_views), ("num_frames", num_frames),
                       ("batch_size", batch_size)):
            if int(v) < (0 if key in ("num_train", "num_test") else 1):
                raise ValueError(f"synthetic_humans: {key} must be positive, got {v!r}")
        self._options = {"num_train": int(num_train), "num_test": int(num_test),
                         "image_size": image_size, "body": body, "seed": seed,
                         "fraction_2d_only": fraction_2d_only,
                         "synthetic_options": dict(synthetic_options or {})}
        self._batch_size = int(batch_size)
        super().__init__(**kwargs)
        kind = self.builder_config.kind
        if kind in ("multiview", "multiview_video"):
            self._options["num_views"] = int(num_views)
        if kind in ("video", "multiview_video"):
            self._options["num_frames"] = int(num_frames)

    def _is_variant(self) -> bool:
        return self.builder_config.kind != "single"

    def synthetic_config(self):
        """The `synthetic.SyntheticConfig` of this build (None options keep its defaults)."""
        synthetic = _synthetic_module()
        kw = {}
        if self.builder_config.kind == "multiview_video":
            kw.update(synthetic.MULTIVIEW_VIDEO_DEFAULTS)
        kw.update({k: self._options[k] for k in ("image_size", "body", "seed", "fraction_2d_only")
                   if self._options[k] is not None})
        kw.update(self._options["synthetic_options"])
        return synthetic.SyntheticConfig(**kw)

    def _split_generators(self, dl_manager):
        del dl_manager
        cfg = self.synthetic_config()
        splits = {split: self._options[f"num_{split}"] for split in ("train", "test")
                  if self._options[f"num_{split}"] > 0}  # TFDS cannot write an empty split
        if not splits:
            raise ValueError("synthetic_humans: num_train and num_test are both 0")
        return {split: self._generate_split(cfg, split, num) for split, num in splits.items()}

    def _generate_split(self, cfg, split, num):
        synthetic = _synthetic_module()
        kind = self.builder_config.kind
        if kind == "single":
            total = num
            it = synthetic.generate(cfg, split, num, batch_size=self._batch_size, progress=False)
        elif kind == "multiview":
            total = num * self._options["num_views"]
            it = synthetic.generate_multiview(cfg, split, num, self._options["num_views"],
                                              batch_size=self._batch_size, progress=False)
        elif kind == "multiview_video":
            total = num * self._options["num_frames"] * self._options["num_views"]
            it = synthetic.generate_multiview_video(cfg, split, num, self._options["num_frames"],
                                                    self._options["num_views"],
                                                    batch_size=self._batch_size, progress=False)
        else:
            total = num * self._options["num_frames"]
            it = synthetic.generate_video(cfg, split, num, self._options["num_frames"],
                                          batch_size=self._batch_size, progress=False)
        variant = self._is_variant()
        fields = {**schema.RECORD_FIELDS, **(schema.VARIANT_FIELDS if variant else {})}
        counts = Counts(written=0)
        for i, rec in enumerate(tqdm(it, total=total, desc=f"{self.name}/{self.builder_config.name}"
                                     f"/{split}", disable=not self._progress, mininterval=1.0)):
            rec = {k: (schema.coerce(k, rec[k]) if k in rec else None) for k in fields}
            missing = [k for k, v in rec.items() if v is None]
            if missing:
                raise KeyError(f"synthetic record {split}/{i} is missing fields {missing}")
            schema.validate_record(rec, variant=variant)
            counts.add("written")
            counts.add("has_smpl", int(rec["has_smpl"]))
            counts.add("has_pose_3d", int(rec["has_pose_3d"]))
            counts.add("has_mask", int(rec["has_mask"]))
            yield i, rec
        if counts["written"] != total:
            raise RuntimeError(f"synthetic_humans/{split}: generator produced {counts['written']} "
                               f"records, expected {total}")
        self._finish_split(split, counts)
