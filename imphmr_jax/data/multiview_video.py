"""Multi-view video splits in host memory, grouped by person, with random access for a
generalizable human NeRF: a target (person, frame, camera) image and n reference images of the same
person in other frames ("cross-pose", ActorsNeRF), drawn by :func:`sample_triplets`.

Reads any built split whose records carry schema.VARIANT_FIELDS with one person per `sequence`
and calibrated cameras: `synthetic_humans/multiview_video` and `zju_mocap` (also the `multiview`
and `video` configs, which have one frame per person or one camera per clip).

    people = load_people("synthetic_humans", builder_config="multiview_video", split="train",
                         data_dir="~/tensorflow_datasets")
    idx = sample_triplets(np.random.default_rng(0), people, batch=4, n_refs=2)   # (4, 3)
    people.images[idx]                                                      # (4, 3, H, W, 3)

``load_people(..., lazy=True)`` keeps the images encoded and decodes what is indexed (large
splits such as ZJU-MoCap at 512 px).

Conventions: world frame of the dataset (y up for the synthetic people; ZJU-MoCap's own), metres;
world -> camera X_c = R X_w + t; K maps camera points to pixel coordinates in which pixel
(row i, col j) has its centre at (j + 0.5, i + 0.5) (the project's convention, :mod:`imphmr_jax.
geometry.camera`); world SMPL: forward(body, pose, betas).vertices + transl, pose with the global
orientation in the world frame.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import os
from typing import Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from imphmr_jax.cli import InputError

_NEEDED = ("image", "mask", "intrinsics", "extrinsics", "pose_world", "betas", "transl_world",
           "sequence", "frame", "view")


@dataclasses.dataclass(frozen=True, eq=False)
class People:
    """A multi-view video split in host memory, N records sorted by (person, frame, view).

    images (N, H, W, 3) uint8 RGB; masks (N, H, W) bool silhouettes (numpy, or
    :class:`EncodedImages` decoding on indexing when loaded with ``lazy=True``); K (N, 3, 3) float32
    intrinsics (pixel centres at +0.5); R (N, 3, 3), t (N, 3) float32 world -> camera; pose
    (N, 24, 3) float32 world axis-angle; betas (N, NB) float32; transl (N, 3) float32 world SMPL
    translation; person (N,) int32 (the records' `sequence`: synthetic person id or ZJU subject
    number); frame (N,) int32; view (N,) int32 (camera); index (N,) int64 the record's row in its
    source.
    """

    images: np.ndarray
    masks: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    person: np.ndarray
    frame: np.ndarray
    view: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.person.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images, pixels."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    @functools.cached_property
    def person_ids(self) -> np.ndarray:
        """(P,) the distinct person ids, ascending."""
        return np.unique(self.person)

    @functools.cached_property
    def _groups(self) -> dict:
        # Records are sorted by person: each person's records are one contiguous range.
        starts = np.flatnonzero(np.r_[True, self.person[1:] != self.person[:-1]])
        ends = np.r_[starts[1:], len(self)]
        return {int(self.person[s]): np.arange(s, e) for s, e in zip(starts, ends)}

    def records_of(self, person: int) -> np.ndarray:
        """Indices (ascending: frame, then view) of one person's records."""
        try:
            return self._groups[int(person)]
        except KeyError:
            raise KeyError(f"no person {person}; people: {self.person_ids.tolist()}") from None


def intrinsics_matrix(intrinsics) -> np.ndarray:
    """(N, 4) [fx, fy, cx, cy] -> (N, 3, 3) K."""
    intr = np.asarray(intrinsics, np.float32)
    K = np.zeros(intr.shape[:-1] + (3, 3), np.float32)
    K[..., 0, 0], K[..., 1, 1] = intr[..., 0], intr[..., 1]
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = intr[..., 2], intr[..., 3], 1.0
    return K


def _decode(data: bytes, mode: str, size) -> np.ndarray:
    img = Image.open(io.BytesIO(bytes(data)))
    img = img.convert(mode)
    if size is not None and img.size != (size[1], size[0]):
        down = size[1] <= img.width and size[0] <= img.height
        img = img.resize((size[1], size[0]), Image.Resampling.BOX if down
                         else Image.Resampling.BILINEAR)
    return np.asarray(img)


def _as_hw(size) -> Optional[tuple[int, int]]:
    if size is None:
        return None
    return (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))


class EncodedImages:
    """A split's images (mode 'RGB') or masks (mode 'L') kept as their encoded bytes and decoded
    when indexed: stands in for the decoded (N, H, W, 3) uint8 / (N, H, W) bool array (``shape``,
    ``len``, indexing with an int, a slice or an integer array of any shape), so that splits too
    large to hold decoded (ZJU-MoCap at 512 px: ~0.8 MB per image) can be sampled from.

    data: (N,) object array of encoded PNG/JPEG bytes; size: (H, W) every item is decoded to
    (resized when stored at another size, as :func:`load_people`'s ``image_size``).
    """

    def __init__(self, data: np.ndarray, mode: str, size: tuple[int, int]):
        if mode not in ("RGB", "L"):
            raise ValueError(f"EncodedImages mode must be 'RGB' or 'L', got {mode!r}")
        self.data, self.mode, self.size = data, mode, (int(size[0]), int(size[1]))

    @property
    def shape(self) -> tuple:
        return (len(self.data),) + self.size + ((3,) if self.mode == "RGB" else ())

    @property
    def dtype(self):
        return np.dtype(np.uint8 if self.mode == "RGB" else bool)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.data)

    def _one(self, data) -> np.ndarray:
        out = _decode(data, self.mode, self.size)
        return out if self.mode == "RGB" else out > 127

    def __getitem__(self, index) -> np.ndarray:
        sel = self.data[index]
        if not isinstance(sel, np.ndarray):  # one item
            return self._one(sel)
        flat = [self._one(d) for d in sel.reshape(-1)]
        if not flat:
            return np.zeros(sel.shape + self.shape[1:], self.dtype)
        return np.stack(flat).reshape(sel.shape + self.shape[1:])

    def resized(self, size) -> "EncodedImages":
        """The same items decoded at another (H, W)."""
        return EncodedImages(self.data, self.mode, _as_hw(size))


def load_people(source, *, split: str = "train", data_dir=None,
                builder_config: Optional[str] = None, builder_options: Optional[dict] = None,
                build_if_missing: bool = False, image_size=None, max_records: Optional[int] = None,
                lazy: bool = False, progress: bool = False) -> People:
    """Read a built multi-view video split into host memory, sorted by (person, frame, view).

    Args:
      source: a random-access source (``len`` and ``source[i]`` -> record dict, e.g. from
        ``builders.load_source``) or a dataset name ('synthetic_humans', 'zju_mocap'), opened with
        ``builders.load_source(source, split, data_dir, config=builder_config)``.
      split, data_dir, builder_config: the split to open when ``source`` is a name.
      builder_options, build_if_missing: with ``build_if_missing``, ``builders.build`` the dataset
        first with these options (reused when already built with the same options); a 'root' or
        'manual_dir' option is the user's folder (zju_mocap).
      image_size: None (as stored), a side S or (H, W): images and masks are resized when read and
        K scaled accordingly (see :func:`resize`).
      max_records: read only the first records of the source (tests, quick looks).
      lazy: keep images and masks encoded (:class:`EncodedImages`, decoded when indexed) instead
        of decoding the split into memory; indexing gives the same arrays.
    Returns:
      :class:`People`. InputError when the records lack the multi-view video fields or images
      differ in size (pass image_size).
    """
    builder_config = builder_config or None  # '' (a config without builder configs) = none
    if isinstance(source, (str, os.PathLike)):
        from imphmr_jax.data import builders  # TFDS only when a dataset is opened by name

        name = os.fspath(source)
        if data_dir is None:
            raise InputError(f"load_people({name!r}): pass data_dir")
        if build_if_missing:
            opts = dict(builder_options or {})
            manual_dir = opts.pop("root", None) or opts.pop("manual_dir", None)
            builders.build(name, data_dir, config=builder_config, manual_dir=manual_dir,
                           progress=progress, **opts)
        source = builders.load_source(name, split, data_dir, config=builder_config)
    n = len(source) if max_records is None else min(len(source), int(max_records))
    if n == 0:
        raise InputError("load_people: the source has no records")
    size = _as_hw(image_size)
    first = source[0]
    missing = [k for k in _NEEDED if k not in first]
    if missing:
        raise InputError(f"load_people: the records have no {missing} fields; build a multi-view "
                         "video dataset (synthetic_humans/multiview_video or zju_mocap)")
    cols = {k: [] for k in _NEEDED}
    scale = []
    first_size = None
    for i in tqdm(range(n), desc="load people", disable=not progress, mininterval=1.0):
        rec = first if i == 0 else source[i]
        w, h = Image.open(io.BytesIO(bytes(rec["image"]))).size  # as built; header only
        first_size = first_size or (h, w)
        if size is None and (h, w) != first_size:
            raise InputError(f"load_people: record {i} has image size {(h, w)}, record 0 "
                             f"{first_size}; pass image_size")
        out_h, out_w = size or first_size
        scale.append((out_w / w, out_h / h))
        if lazy:
            cols["image"].append(bytes(rec["image"]))
            cols["mask"].append(bytes(rec["mask"]))
        else:
            cols["image"].append(_decode(rec["image"], "RGB", (out_h, out_w)))
            cols["mask"].append(_decode(rec["mask"], "L", (out_h, out_w)) > 127)
        for k in _NEEDED[2:]:
            cols[k].append(np.asarray(rec[k]))
    intr = np.stack(cols["intrinsics"]).astype(np.float64)
    sxy = np.asarray(scale, np.float64)
    intr = intr * np.concatenate([sxy, sxy], 1)  # exact for pixel centres at +0.5
    ext = np.stack(cols["extrinsics"]).astype(np.float32)
    person = np.stack(cols["sequence"]).astype(np.int32)
    frame = np.stack(cols["frame"]).astype(np.int32)
    view = np.stack(cols["view"]).astype(np.int32)
    order = np.lexsort((view, frame, person))
    if lazy:
        data = {k: np.empty(n, object) for k in ("image", "mask")}
        for k in data:
            data[k][:] = cols[k]
        images = EncodedImages(data["image"][order], "RGB", size or first_size)
        masks = EncodedImages(data["mask"][order], "L", size or first_size)
    else:
        images, masks = np.stack(cols["image"])[order], np.stack(cols["mask"])[order]
    return People(
        images=images, masks=masks,
        K=intrinsics_matrix(intr)[order], R=ext[order, :, :3], t=ext[order, :, 3],
        pose=np.stack(cols["pose_world"]).astype(np.float32).reshape(n, 24, 3)[order],
        betas=np.stack(cols["betas"]).astype(np.float32)[order],
        transl=np.stack(cols["transl_world"]).astype(np.float32)[order],
        person=person[order], frame=frame[order], view=view[order],
        index=np.arange(n, dtype=np.int64)[order])


def resize(people: People, image_size) -> People:
    """The same people with images and masks resized to a side S or (H, W) (area average down,
    bilinear up; masks: area > 1/2) and K scaled by the per-axis factors (exact in the +0.5
    pixel-centre convention: u' = s u)."""
    h, w = _as_hw(image_size)
    h0, w0 = people.image_size
    if (h, w) == (h0, w0):
        return people
    K = people.K.copy()
    K[:, 0] *= w / w0
    K[:, 1] *= h / h0
    if isinstance(people.images, EncodedImages):  # decoded at the new size from the stored bytes
        return dataclasses.replace(people, images=people.images.resized((h, w)),
                                   masks=people.masks.resized((h, w)), K=K)
    down = h <= h0 and w <= w0
    method = Image.Resampling.BOX if down else Image.Resampling.BILINEAR
    images = np.stack([np.asarray(Image.fromarray(im).resize((w, h), method))
                       for im in people.images])
    masks = np.stack([np.asarray(Image.fromarray(np.where(m, 255, 0).astype(np.uint8))
                                 .resize((w, h), method)) > 127 for m in people.masks])
    return dataclasses.replace(people, images=images, masks=masks, K=K)


def _reference_pool(people: People, i: int, same_camera: bool) -> np.ndarray:
    """Record indices that may serve as references of record i: the same person in other frames
    (and, with same_camera, the same camera)."""
    group = people.records_of(int(people.person[i]))
    keep = people.frame[group] != people.frame[i]
    if same_camera:
        keep &= people.view[group] == people.view[i]
    return group[keep]


def _pool_sizes(people: People, same_camera: bool) -> np.ndarray:
    """(N,) number of references each record has (see _reference_pool), vectorised."""
    key = (people.person.astype(np.int64), people.frame.astype(np.int64))
    cam = people.view.astype(np.int64) if same_camera else np.zeros(len(people), np.int64)
    # records per (person[, view]) minus records per (person, frame[, view])
    _, inv_a, cnt_a = np.unique(np.stack([key[0], cam], 1), axis=0, return_inverse=True,
                                return_counts=True)
    _, inv_b, cnt_b = np.unique(np.stack([key[0], key[1], cam], 1), axis=0, return_inverse=True,
                                return_counts=True)
    return cnt_a[inv_a.reshape(-1)] - cnt_b[inv_b.reshape(-1)]


def sample_triplets(rng: np.random.Generator, people: People, batch: int, n_refs: int = 2, *,
                    same_camera: bool = False) -> np.ndarray:
    """Indices (batch, 1 + n_refs) int64 into ``people``: [target, ref_1, ..., ref_n].

    Targets are uniform over the records that have at least n_refs references; the references
    are n_refs distinct records of the target's person in frames other than the target's
    ("cross-pose", as ActorsNeRF's reference frames), from any camera, or from the target's camera
    only when ``same_camera`` (ActorsNeRF's choice on ZJU-MoCap). Deterministic for a given rng
    state. ValueError when no record has enough references (e.g. single-frame people).
    """
    if batch < 1 or n_refs < 0:
        raise ValueError(f"sample_triplets needs batch >= 1 and n_refs >= 0, got {batch}, "
                         f"{n_refs}")
    eligible = np.flatnonzero(_pool_sizes(people, same_camera) >= n_refs)
    if eligible.size == 0:
        frames = max(len(np.unique(people.frame[people.records_of(p)]))
                     for p in people.person_ids)
        raise ValueError(f"no record has {n_refs} references in other frames"
                         f"{' of the same camera' if same_camera else ''}: people have at most "
                         f"{frames} frames")
    targets = rng.choice(eligible, size=batch)
    out = np.empty((batch, 1 + n_refs), np.int64)
    out[:, 0] = targets
    for b, i in enumerate(targets):
        out[b, 1:] = rng.choice(_reference_pool(people, int(i), same_camera), size=n_refs,
                                replace=False)
    return out
