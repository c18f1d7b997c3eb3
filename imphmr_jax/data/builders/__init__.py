"""TFDS builders (ArrayRecord, no TensorFlow) for every dataset, and the two entry points:

    build(name, data_dir, *, manual_dir=None, config=None, overwrite=False, progress=True,
          **options) -> tfds builder        # used by `python -m imphmr_jax.data.build`
    load_source(name, split, data_dir, *, config=None) -> random-access source of record dicts

Dataset names: h36m, mpi_inf_3dhp, pw3d, pw3d_occ, coco_eft, mpii_eft, lspet_eft, lsp (real, need a
manual_dir; see `real.py` and docs/datasets.md), zju_mocap (your ZJU-MoCap root as manual_dir;
see `zju_mocap.py`) and synthetic_humans (configs default, multiview, video, multiview_video).
Records follow `imphmr_jax.data.schema` exactly. Build counts (written, skipped by reason,
NaN flags) and the build options are in `build_metadata(name, data_dir)` (the dataset's
metadata.json).
"""
from __future__ import annotations

import logging
import os
import shutil
import warnings

import tensorflow_datasets as tfds
from etils import epath

from imphmr_jax.cli import InputError, UnknownNameError, expand_path
from imphmr_jax.data.builders.base import _jsonable
from imphmr_jax.data.builders.base import (  # noqa: F401
    BadImageError,
    Counts,
    HumanBuilder,
    record_features,
)
from imphmr_jax.data.builders.real import (  # noqa: F401
    REAL_BUILDERS,
    AnnotationError,
    CocoEft,
    H36m,
    Lsp,
    LspetEft,
    MpiiEft,
    MpiInf3dhp,
    Pw3d,
    Pw3dOcc,
    RealNpzBuilder,
    annotation_record,
    find_annotation_file,
    load_annotations,
    parse_gender,
)
from imphmr_jax.data.builders.synthetic_humans import SyntheticHumans  # noqa: F401
from imphmr_jax.data.builders.zju_mocap import ZjuMocap  # noqa: F401

# `python -m imphmr_jax.data.builders.zju_mocap` (its CLI) runs a module this package has already
# imported; runpy warns about that, but the module's __main__ block hands over to the imported copy.
warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy",
                        message=r"'imphmr_jax\.data\.builders\.zju_mocap' found in sys\.modules")

log = logging.getLogger("imphmr_jax.data.builders")


class _NoUnbuiltVariantWarning(logging.Filter):
    """TFDS warns "Variant folder ... has no dataset_info.json" whenever a builder is created for a
    dataset that is not built yet -- before every build and before the clear "not built" error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "has no dataset_info.json" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoUnbuiltVariantWarning())

BUILDERS: dict[str, type[HumanBuilder]] = {**REAL_BUILDERS, SyntheticHumans.name: SyntheticHumans,
                                          ZjuMocap.name: ZjuMocap}


def builder_class(name: str) -> type[HumanBuilder]:
    """The builder class of dataset `name`; KeyError listing the known names."""
    try:
        return BUILDERS[name]
    except KeyError:
        raise UnknownNameError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}") from None


def build_command(name: str, data_dir, config: str | None = None) -> str:
    """The CLI command that builds `name` into `data_dir`."""
    cmd = f"python -m imphmr_jax.data.build --dataset {name} --data_dir {data_dir}"
    if config:
        cmd += f" --config {config}"
    if issubclass(builder_class(name), RealNpzBuilder):
        cmd += " --manual_dir <folder with the npz files and images>"
    elif builder_class(name).MANUAL_DIR_REQUIRED:
        cmd += f" --manual_dir <{builder_class(name).MANUAL_DIR_HINT}>"
    return cmd


def _builder(name, data_dir, config, **options) -> HumanBuilder:
    cls = builder_class(name)
    if config is not None and not cls.BUILDER_CONFIGS:
        raise InputError(f"dataset {name!r} has no builder configs (got config={config!r})")
    if config is not None:
        known = [c.name for c in cls.BUILDER_CONFIGS]
        if config not in known:
            raise InputError(f"dataset {name!r} has no config {config!r}; known: {known}")
    try:
        return cls(data_dir=os.fspath(data_dir), config=config, file_format="array_record",
                   **options)
    except ValueError as e:  # the builders check their options in __init__: the user's input
        if isinstance(e, InputError):
            raise
        raise InputError(str(e)) from e


def _stale_incomplete_dirs(builder) -> list[epath.Path]:
    parent = builder.data_path.parent
    if not parent.exists():
        return []
    return [p for p in parent.iterdir()
            if p.name.startswith("incomplete.") and p.name.endswith("_" + builder.data_path.name)]


def build(name: str, data_dir, *, manual_dir=None, config: str | None = None,
          overwrite: bool = False, progress: bool = True, **options) -> HumanBuilder:
    """Build dataset `name` (config `config`) into `data_dir`; returns the prepared builder.

    Real datasets need `manual_dir` (see docs/datasets.md); `options` go to the builder (real:
    precrop_margin, on_bad_image, jpeg_quality, splits, image_dir, mask_dir; synthetic_humans:
    num_train, num_test, image_size, body, seed, fraction_2d_only, num_views, num_frames,
    batch_size). An already complete build with the same options is reused; with different
    options it is an error unless `overwrite=True` (which deletes and rebuilds it). Leftover
    `incomplete.*` folders of a killed build are removed first (do not build the same dataset into
    the same data_dir from two processes at once).
    """
    data_dir = expand_path(os.fspath(data_dir))
    manual_dir = expand_path(manual_dir)
    builder = _builder(name, data_dir, config, progress=progress, **options)
    if issubclass(type(builder), RealNpzBuilder):
        if manual_dir is None:
            raise InputError(f"dataset {name!r} is built from your files: pass manual_dir "
                             "(the dataset root with the npz annotation files); see "
                             "docs/datasets.md")
        if not os.path.isdir(manual_dir):
            raise FileNotFoundError(f"dataset {name!r}: manual_dir {manual_dir} does not exist")
        # Every annotation file is found and validated (keys, shapes) before TFDS starts, so a
        # bad file is one error naming it and its key, with nothing written.
        for split in builder.options["splits"]:
            load_annotations(find_annotation_file(manual_dir, builder.SPLIT_FILES[split]))
    elif builder.MANUAL_DIR_REQUIRED:
        if manual_dir is None:
            raise InputError(f"dataset {name!r} is built from your files: pass manual_dir "
                             f"({builder.MANUAL_DIR_HINT}); see docs/datasets.md")
        if overwrite or not builder.is_prepared():
            # The user's files are checked (errors name the file and the key) before TFDS
            # starts, so nothing is written from a bad folder.
            builder.check_manual_dir(manual_dir)
    if builder.is_prepared() and not overwrite:
        stored = dict(builder.info.metadata or {}).get("options")
        wanted = base_jsonable(builder.options)
        if stored != wanted:
            raise InputError(
                f"dataset {name!r} in {builder.data_dir} was built with options {stored}, "
                f"requested {wanted}; use another data_dir or overwrite=True (--overwrite)")
        log.info("reusing %s (%s)", name, builder.data_dir)
        return builder
    for stale in _stale_incomplete_dirs(builder):
        log.warning("removing the leftover of an interrupted build: %s", stale)
        shutil.rmtree(os.fspath(stale), ignore_errors=True)
    mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    dl_config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir),
        download_mode=mode, try_download_gcs=False,
        compute_stats=tfds.download.ComputeStatsMode.SKIP)
    # One progress bar: the builders' own (per dataset/split, with counts), not TFDS's as well.
    tfds.disable_progress_bar()
    created = _missing_dirs(data_dir, builder)
    try:
        builder.download_and_prepare(download_config=dl_config)
    except BaseException:
        _remove_failed_build(builder, created)
        raise
    # Re-open from disk so that info/metadata are those stored with the data.
    return _builder(name, data_dir, config)


def _missing_dirs(data_dir, builder) -> list[str]:
    """The folders a build of `builder` creates that do not exist yet (deepest last)."""
    folders = [data_dir, os.path.join(data_dir, "downloads")]
    d = os.fspath(builder.data_path)
    chain = []
    while os.path.normpath(d) != os.path.normpath(data_dir) and d not in chain:
        chain.append(d)
        d = os.path.dirname(d)
    folders += reversed(chain)  # data_dir/name, data_dir/name/config, .../version
    return [f for f in folders if not os.path.exists(f)]


def _remove_failed_build(builder, created: list[str]) -> None:
    """After a failed build: the build's `incomplete.*` folder and the folders it created, when
    they hold nothing but empty folders (another build's files are never touched)."""
    for stale in _stale_incomplete_dirs(builder):
        shutil.rmtree(os.fspath(stale), ignore_errors=True)
    for folder in sorted(created, key=len, reverse=True):
        if not os.path.isdir(folder):
            continue
        for root, dirs, files in os.walk(folder, topdown=False):
            if not files and not os.listdir(root):
                try:
                    os.rmdir(root)
                except OSError:
                    pass


def base_jsonable(options: dict) -> dict:
    return _jsonable(options)


def _other_versions(builder) -> list:
    """Version folders of `builder`'s dataset/config other than its own (finished builds only)."""
    folder = os.path.dirname(builder.data_dir)
    if not os.path.isdir(folder):
        return []
    return sorted(v for v in os.listdir(folder)
                  if v != str(builder.version)
                  and os.path.isfile(os.path.join(folder, v, "dataset_info.json")))


def _prepared_builder(name, data_dir, config) -> HumanBuilder:
    builder = _builder(name, data_dir, config)
    if not builder.is_prepared():
        stale = _stale_incomplete_dirs(builder)
        extra = (f" (found the leftover of an interrupted build: {stale[0]})" if stale else "")
        older = _other_versions(builder)
        if older:
            extra += (f" (found version(s) {', '.join(older)} built by another imphmr_jax release; "
                      f"this release reads {builder.version})")
        raise FileNotFoundError(
            f"dataset {name!r}" + (f" config {config!r}" if config else "")
            + f" is not built in data_dir {data_dir}{extra}. Build it with:\n  "
            + build_command(name, data_dir, config))
    return builder


def load_source(name: str, split: str, data_dir, *, config: str | None = None):
    """A random-access source (len, __getitem__ -> record dict of numpy arrays/bytes) of a built
    split, from `tfds` ArrayRecord files (`~` and $VARS in data_dir are expanded).
    FileNotFoundError (with the build command) if the dataset is not built; KeyError listing the
    splits if `split` is absent."""
    data_dir = expand_path(os.fspath(data_dir))
    builder = _prepared_builder(name, data_dir, config)
    splits = list(builder.info.splits.keys())
    if split not in splits:
        raise UnknownNameError(f"dataset {name!r} in {data_dir} has no split {split!r}; "
                               f"built splits: {splits}")
    return builder.as_data_source(split=split)


def build_metadata(name: str, data_dir, *, config: str | None = None) -> dict:
    """{"options": {...}, "counts": {split: {"written": n, "skipped_*": n, ...}}} of a built dataset."""
    return dict(_prepared_builder(name, expand_path(os.fspath(data_dir)), config).info.metadata
                or {})


__all__ = ["BUILDERS", "build", "load_source", "build_metadata", "build_command", "builder_class",
           "load_annotations", "annotation_record", "parse_gender", "AnnotationError",
           "BadImageError", "record_features"]
