"""Pre-trained weights into ImpHMR's variables: converted PyTorch weights (a torchvision ResNet or
SPIN's checkpoint, written by `python -m imphmr_jax.convert`) or another run's checkpoint.

Loading weights builds no optimizer: evaluation of converted weights only needs the variables.
"""
from __future__ import annotations

import os
from typing import Mapping

import flax
import jax
import numpy as np

from imphmr_jax.convert import load_npz
from imphmr_jax.models.build import build_model, init_variables
from imphmr_jax.training.checkpoint import load_variables
from imphmr_jax.training.state import merge_tree

KINDS = ("imagenet", "spin", "checkpoint")


def with_pretrained(variables: Mapping, kind: str, path: str) -> dict:
    """`variables` ({'params', 'batch_stats'}) with the pre-trained part replaced.

    kind: 'imagenet' (a converted torchvision ResNet: the backbone), 'spin' (converted SPIN:
      backbone + regressor) or 'checkpoint' (a training workdir: its evaluated variables, all of
      them). A parameter the model lacks or a shape mismatch is a ValueError naming it.
    """
    if kind not in KINDS:
        raise ValueError(f"train.init.kind must be one of {KINDS} (or None), got {kind!r}")
    path = os.path.expanduser(path)
    params = flax.core.unfreeze(jax.device_get(variables["params"]))
    stats = flax.core.unfreeze(jax.device_get(variables.get("batch_stats", {})))
    if kind == "checkpoint":
        restored = load_variables(path)
        return {"params": merge_tree(params, restored["params"], "params"),
                "batch_stats": merge_tree(stats, restored["batch_stats"], "batch_stats")}
    tree = load_npz(path)
    backbone = tree["backbone"] if kind == "spin" else tree
    params["backbone"] = merge_tree(params["backbone"], backbone["params"], "params/backbone")
    stats["backbone"] = merge_tree(stats["backbone"], backbone.get("batch_stats", {}),
                                   "batch_stats/backbone")
    if kind == "spin":
        params["regressor"] = merge_tree(params["regressor"], tree["regressor"]["params"],
                                         "params/regressor")
    return {"params": params, "batch_stats": stats}


def variables_from_converted(config, path: str):
    """(model, variables) for weights written by `python -m imphmr_jax.convert`.

    A converted SPIN file (backbone + regressor + mean parameters) gives the 'baseline' variant
    its exact SPIN network; for 'imphmr'/'ptn' the backbone and regressor are loaded and the rest
    keeps its initialisation (drawn from `train.seed` as in training). A converted ResNet gives
    the backbone only.
    """
    path = os.path.expanduser(path)
    tree = load_npz(path)
    mean_params = tree.get("mean_params")
    model = build_model(config.model, mean_params=None if mean_params is None else
                        {k: np.asarray(v) for k, v in mean_params.items()})
    seed = int(config.train.seed)
    variables = jax.jit(lambda k: init_variables(model, k, config.data.img_res,
                                                 config.train.num_views))(
        jax.random.key(seed, impl="rbg"))
    kind = "spin" if "regressor" in tree else "imagenet"
    return model, with_pretrained(variables, kind, path)
