"""Pre-trained weights into ImpHMR's variables: converted PyTorch weights (a torchvision ResNet or
SPIN's checkpoint, written by `python -m imphmr_jax.convert`) or another run's checkpoint.

Loading weights builds no optimizer: evaluation of converted weights only needs the variables.
"""
from __future__ import annotations

from typing import Mapping

import flax
import jax
import numpy as np

from imphmr_jax.cli import ConfigError, InputError, expand_path
from imphmr_jax.convert import load_npz
from imphmr_jax.models.build import build_model, init_variables
from imphmr_jax.training.checkpoint import load_variables
from imphmr_jax.training.state import merge_tree

KINDS = ("imagenet", "spin", "checkpoint")
_CONVERT_HINT = ("convert PyTorch weights with `python -m imphmr_jax.convert --torch FILE "
                 "--kind {resnet50,resnet18,resnet34,spin} --out FILE.npz`")


def _describe(tree: Mapping) -> str:
    keys = sorted(tree)
    return "its top-level keys: " + (", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "")
                                      if keys else "none (an empty file)")


def load_converted(path: str, kind: str | None = None) -> dict:
    """The tree of a converted-weights .npz, checked: kind 'imagenet' needs a converted ResNet
    (`params`, `batch_stats`), 'spin' converted SPIN (`backbone`, `regressor`); None accepts
    either. FileNotFoundError / InputError naming the file and what was expected."""
    tree = load_npz(path)
    is_spin = isinstance(tree.get("backbone"), Mapping) and isinstance(
        tree.get("regressor"), Mapping) and "params" in tree["regressor"] \
        and "params" in tree["backbone"]
    is_resnet = isinstance(tree.get("params"), Mapping)
    if kind == "spin" and not is_spin:
        what = ("a converted ResNet (backbone only)" if is_resnet else _describe(tree))
        raise InputError(f"{path}: expected converted SPIN weights (backbone/params/... and "
                         f"regressor/params/...), found {what}; {_CONVERT_HINT}")
    if kind == "imagenet" and not is_resnet:
        what = ("converted SPIN weights (use kind 'spin')" if is_spin else _describe(tree))
        raise InputError(f"{path}: expected a converted ResNet (params/... and "
                         f"batch_stats/...), found {what}; {_CONVERT_HINT}")
    if kind is None and not (is_spin or is_resnet):
        raise InputError(f"{path}: not converted weights (expected a converted ResNet with "
                         f"params/... or converted SPIN with backbone/... and regressor/...; "
                         f"{_describe(tree)}); {_CONVERT_HINT}")
    return tree


def _merge(dst, src, where: str, path: str):
    """merge_tree, with a weights file that does not fit the model as an InputError naming it."""
    try:
        return merge_tree(dst, src, where)
    except ValueError as e:
        raise InputError(f"{path}: {e} (weights of another model size or variant?)") from e


def with_pretrained(variables: Mapping, kind: str, path: str) -> dict:
    """`variables` ({'params', 'batch_stats'}) with the pre-trained part replaced.

    kind: 'imagenet' (a converted torchvision ResNet: the backbone), 'spin' (converted SPIN:
      backbone + regressor) or 'checkpoint' (a training workdir: its evaluated variables, all of
      them). A parameter the model lacks or a shape mismatch is a ValueError naming it.
    """
    if kind not in KINDS:
        raise ConfigError(f"train.init.kind must be one of {KINDS} (or None), got {kind!r}")
    path = expand_path(path)
    if kind == "checkpoint":
        restored = load_variables(path)
    else:
        tree = load_converted(path, kind)
    params = flax.core.unfreeze(jax.device_get(variables["params"]))
    stats = flax.core.unfreeze(jax.device_get(variables.get("batch_stats", {})))
    if kind == "checkpoint":
        return {"params": _merge(params, restored["params"], "params", path),
                "batch_stats": _merge(stats, restored["batch_stats"], "batch_stats", path)}
    backbone = tree["backbone"] if kind == "spin" else tree
    params["backbone"] = _merge(params["backbone"], backbone["params"], "params/backbone", path)
    stats["backbone"] = _merge(stats["backbone"], backbone.get("batch_stats", {}),
                               "batch_stats/backbone", path)
    if kind == "spin":
        params["regressor"] = _merge(params["regressor"], tree["regressor"]["params"],
                                     "params/regressor", path)
    return {"params": params, "batch_stats": stats}


def variables_from_converted(config, path: str, *, tree: Mapping | None = None):
    """(model, variables) for weights written by `python -m imphmr_jax.convert`.

    A converted SPIN file (backbone + regressor + mean parameters) gives the 'baseline' variant
    its exact SPIN network; for 'imphmr'/'ptn' the backbone and regressor are loaded and the rest
    keeps its initialisation (drawn from `train.seed` as in training). A converted ResNet gives
    the backbone only. `tree`: the file's `load_converted(path)` when already read.
    """
    path = expand_path(path)
    if tree is None:
        tree = load_converted(path)  # checked before the model is built
    mean_params = tree.get("mean_params")
    model = build_model(config.model, mean_params=None if mean_params is None else
                        {k: np.asarray(v) for k, v in mean_params.items()})
    seed = int(config.train.seed)
    variables = jax.jit(lambda k: init_variables(model, k, config.data.img_res,
                                                 config.train.num_views))(
        jax.random.key(seed, impl="rbg"))
    kind = "spin" if "regressor" in tree else "imagenet"
    return model, with_pretrained(variables, kind, path)
