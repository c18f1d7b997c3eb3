"""PyTorch weights -> Flax variables: torchvision ResNets and SPIN's HMR checkpoint.

Rules (flax guide `convert_pytorch_to_flax`; docs/training.md#pytorch-weights): conv OIHW -> HWIO,
linear (out, in) -> (in, out), BatchNorm weight/bias -> params scale/bias, running_mean/var ->
batch_stats mean/var, num_batches_tracked dropped. Everything here works on numpy arrays; torch is
imported only by `load_torch_file`, so a user without torch converts once elsewhere with

    python -m imphmr_jax.convert --torch model_checkpoint.pt --kind spin --out spin.npz

and loads the result with `load_npz`. Missing and unexpected keys are reported by name.
"""
import argparse
import os
import tempfile
import zipfile
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from imphmr_jax.models.regressor import NPOSE, NUM_BETAS, NUM_CAM, Regressor
from imphmr_jax.models.resnet import ResNet

RESNET_STAGES = {"resnet50": ((3, 4, 6, 3), "bottleneck"), "resnet18": ((2, 2, 2, 2), "basic"),
                 "resnet34": ((3, 4, 6, 3), "basic")}
REGRESSOR_LAYERS = ("fc1", "fc2", "decpose", "decshape", "deccam")
MEAN_BUFFERS = {"init_pose": "pose", "init_shape": "shape", "init_cam": "cam"}
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _np(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _strip_prefix(state: Mapping, prefix: str = "module.") -> dict:
    """DataParallel checkpoints prefix every key with 'module.'; drop it when all keys have it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _resnet_mapping(stage_sizes: Sequence[int], block: str) -> dict:
    """torch key -> (collection, flax path, kind) for a torchvision ResNet without fc."""
    expansion = {"basic": 1, "bottleneck": 4}[block]
    n_conv = 3 if block == "bottleneck" else 2
    mapping = {}

    def add_conv(tkey, path):
        mapping[f"{tkey}.weight"] = ("params", path + ("kernel",), "conv")

    def add_bn(tkey, path):
        for tname, (col, fname) in _BN.items():
            mapping[f"{tkey}.{tname}"] = (col, path + (fname,), "vector")

    add_conv("conv1", ("conv1",))
    add_bn("bn1", ("bn1",))
    in_ch, width = 1, 1  # relative channel counts decide where torchvision puts a downsample
    for i, n_blocks in enumerate(stage_sizes):
        planes = width * 2**i
        for j in range(n_blocks):
            stride = 2 if (i > 0 and j == 0) else 1
            t, f = f"layer{i + 1}.{j}", (f"layer{i + 1}_{j}",)
            for n in range(1, n_conv + 1):
                add_conv(f"{t}.conv{n}", f + (f"conv{n}",))
                add_bn(f"{t}.bn{n}", f + (f"bn{n}",))
            if j == 0 and (stride != 1 or in_ch != planes * expansion):
                add_conv(f"{t}.downsample.0", f + ("downsample_conv",))
                add_bn(f"{t}.downsample.1", f + ("downsample_bn",))
            in_ch = planes * expansion
    return mapping


def _transform(value: np.ndarray, kind: str) -> np.ndarray:
    value = np.asarray(value, np.float32)
    if kind == "conv":
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))  # OIHW -> HWIO
    if kind == "linear":
        return np.ascontiguousarray(value.T)  # (out, in) -> (in, out)
    return value


def _set(tree: dict, path: Sequence[str], value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _flatten(tree, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _apply_mapping(state: Mapping, mapping: dict):
    """Convert the mapped keys present in `state`; returns (tree, sorted missing keys)."""
    tree = {}
    for tkey, (col, path, kind) in mapping.items():
        if tkey in state:
            _set(tree, (col,) + tuple(path), _transform(_np(state[tkey]), kind))
    missing = sorted(k for k in mapping if k not in state)
    return tree, missing


def _check_shapes(tree: dict, expected: dict, what: str) -> None:
    """Every converted array must have the shape the Flax module creates; names the offenders."""
    got, want = _flatten(tree), _flatten(expected)
    bad = [f"{k}: got {tuple(v.shape)}, expected {tuple(want[k].shape)}"
           for k, v in got.items() if k in want and tuple(v.shape) != tuple(want[k].shape)]
    if bad:
        raise ValueError(f"{what}: converted arrays do not fit the Flax module (wrong layout or "
                         f"kind?):\n  " + "\n  ".join(bad))


def _finish(report: dict, strict: bool, what: str) -> None:
    if strict and (report["missing"] or report["unexpected"]):
        lines = [f"{what}: state dict does not match the expected layout."]
        if report["missing"]:
            lines.append(f"missing keys ({len(report['missing'])}): {report['missing']}")
        if report["unexpected"]:
            lines.append(f"unexpected keys ({len(report['unexpected'])}): {report['unexpected']}")
        if not report["converted"]:
            found = sorted(set(report["unexpected"]) | set(report.get("ignored", [])))
            lines = [f"{what}: none of the {len(report['missing'])} keys of this layout is in the "
                     f"file (its keys: {found[:8]}{' ...' if len(found) > 8 else ''}); is it the "
                     "right file and --kind?"]
        lines.append("(pass strict=False / --non-strict to convert anyway and get these lists in "
                     "a report)")
        raise ValueError("\n".join(lines))


def _resnet_expected_shapes(width: int, stage_sizes, block) -> dict:
    model = ResNet(stage_sizes=tuple(stage_sizes), block=block, width=width)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                             train=False))


def _resnet(state: Mapping, stage_sizes, block, extra_known=()):
    """Shared by resnet_from_torch and spin_from_torch: (variables, report)."""
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
    mapping = _resnet_mapping(stage_sizes, block)
    variables, missing = _apply_mapping(state, mapping)
    ignored = sorted(k for k in state if k.endswith(".num_batches_tracked")
                     or k in ("fc.weight", "fc.bias"))
    known = set(mapping) | set(ignored) | set(extra_known)
    unexpected = sorted(k for k in state if k not in known)
    width = int(_np(state["conv1.weight"]).shape[0]) if "conv1.weight" in state else 64
    report = dict(converted=sorted(k for k in mapping if k in state), ignored=ignored,
                  missing=missing, unexpected=unexpected, width=width)
    return variables, report


def resnet_from_torch(state_dict: Mapping, stage_sizes: Sequence[int] = (3, 4, 6, 3),
                      block: str = "bottleneck", strict: bool = True):
    """torchvision ResNet state dict -> Flax variables {'params', 'batch_stats'} for `ResNet`.

    `fc.*` (the ImageNet classifier) and `*.num_batches_tracked` are ignored (listed in the report);
    the width is read from conv1.weight. strict=True raises ValueError naming missing and unexpected
    keys; strict=False returns (variables, report) with report keys converted, ignored, missing,
    unexpected, width.
    """
    variables, report = _resnet_checked(_strip_prefix(state_dict), stage_sizes, block, strict,
                                        "resnet_from_torch")
    return variables if strict else (variables, report)


def _resnet_checked(state, stage_sizes, block, strict, what):
    variables, report = _resnet(state, stage_sizes, block)
    _finish(report, strict, what)
    _check_shapes(variables, _resnet_expected_shapes(report["width"], stage_sizes, block), what)
    return variables, report


def spin_from_torch(state_dict: Mapping, stage_sizes: Sequence[int] = (3, 4, 6, 3),
                    block: str = "bottleneck", strict: bool = True):
    """SPIN HMR state dict (`model_checkpoint.pt['model']`) -> (backbone variables, regressor
    params, mean params).

    Backbone keys are torchvision's at the top level; `fc1, fc2, decpose, decshape, deccam` are
    Linear layers -> `Regressor` params (use as {'params': regressor_params}); the buffers
    `init_pose (1,144), init_shape (1,10), init_cam (1,3)` -> dict(pose, shape, cam) flat float32,
    the Regressor's mean_pose / mean_shape / mean_cam. A dict still wrapped in {'model': ...} is
    unwrapped. strict=False returns a 4th element, the report (as in `resnet_from_torch`).
    """
    backbone, reg_params, mean, report = _spin_checked(_unwrap(state_dict), stage_sizes, block,
                                                       strict, "spin_from_torch")
    out = (backbone, reg_params, mean)
    return out if strict else out + (report,)


def _spin_checked(state, stage_sizes, block, strict, what):
    reg_mapping = {}
    for layer in REGRESSOR_LAYERS:
        reg_mapping[f"{layer}.weight"] = ("params", (layer, "kernel"), "linear")
        reg_mapping[f"{layer}.bias"] = ("params", (layer, "bias"), "vector")
    extra = set(reg_mapping) | set(MEAN_BUFFERS)
    backbone, report = _resnet(state, stage_sizes, block, extra_known=extra)
    reg_tree, reg_missing = _apply_mapping(state, reg_mapping)
    reg_params = reg_tree.get("params", {})
    mean = {}
    for tkey, name in MEAN_BUFFERS.items():
        if tkey in state:
            mean[name] = np.asarray(_np(state[tkey]), np.float32).reshape(-1)
    mean_missing = sorted(k for k in MEAN_BUFFERS if k not in state)
    report["converted"] = sorted(report["converted"] + [k for k in reg_mapping if k in state]
                                 + [k for k in MEAN_BUFFERS if k in state])
    report["missing"] = sorted(report["missing"] + reg_missing + mean_missing)
    _finish(report, strict, what)
    _check_shapes(backbone, _resnet_expected_shapes(report["width"], stage_sizes, block),
                  f"{what} (backbone)")
    if "fc1.weight" in state:
        _check_shapes(reg_params, _regressor_expected_shapes(state), f"{what} (regressor)")
    for name, n in (("pose", 144), ("shape", 10), ("cam", 3)):
        if name in mean and mean[name].shape != (n,):
            raise ValueError(f"{what}: init_{name} has {mean[name].size} values, expected {n}")
    return backbone, reg_params, mean, report


def _regressor_expected_shapes(state: Mapping) -> dict:
    hidden, fan_in = _np(state["fc1.weight"]).shape
    n_feat = fan_in - NPOSE - NUM_BETAS - NUM_CAM
    if n_feat <= 0:
        raise ValueError(f"spin_from_torch: fc1.weight has shape {(hidden, fan_in)}; its input "
                         f"must be features + {NPOSE + NUM_BETAS + NUM_CAM}")
    model = Regressor(hidden=int(hidden))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, n_feat)),
                                               train=False))
    return shapes["params"]


def _unwrap(state: Mapping) -> dict:
    """SPIN saves {'model': state_dict, 'optimizer': ...}; Lightning saves {'state_dict': ...}."""
    for key in ("model", "state_dict"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    return _strip_prefix(state)


# ---------------------------------------------------------------------------------------- files


def load_torch_file(path) -> dict:
    """A .pt/.pth file -> {key: numpy array} (torch.load, weights_only=True, map_location='cpu').

    SPIN's {'model': state_dict, ...} wrapper (and Lightning's 'state_dict') is unwrapped; entries
    that are not tensors or arrays (epoch counters, optimizer state) are dropped.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"PyTorch weights file not found: {path}")
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"reading {path} needs torch; convert it once on a machine with torch "
                          "(python -m imphmr_jax.convert ... --out FILE.npz) and load the npz "
                          "with imphmr_jax.convert.load_npz") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a file it cannot read
        raise ValueError(f"{path}: cannot read as a PyTorch checkpoint (torch.load: "
                         f"{type(e).__name__}: {e})") from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), got "
                         f"{type(obj).__name__}")
    state = _unwrap(obj)
    return {k: _np(v) for k, v in state.items() if hasattr(v, "detach") or isinstance(v, np.ndarray)}


def save_npz(path, tree: Mapping) -> None:
    """Write a nested dict of arrays as an .npz with '/'-joined keys; atomic (temp file + rename)."""
    path = os.fspath(path)
    flat = {k: np.asarray(v) for k, v in _flatten(tree).items()}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **flat)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_npz(path, expected: str) -> dict:
    """{key: array} of an .npz file. FileNotFoundError if missing; an InputError (a ValueError)
    naming the file and `expected` (what it should hold) if it is not a readable .npz."""
    from imphmr_jax.cli import InputError
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"file not found: {path} (expected {expected})")
    if os.path.isdir(path) or not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not an .npz file (not a zip archive); expected {expected}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as e:  # noqa: BLE001 - numpy/zipfile raise many types for a damaged file
        raise InputError(f"{path}: cannot read as an .npz file ({type(e).__name__}: {e}); "
                         f"expected {expected}") from e


def load_npz(path) -> dict:
    """Inverse of `save_npz`: a nested dict of numpy arrays (errors as `read_npz`)."""
    tree = {}
    for key, value in read_npz(path, "converted weights (written by python -m "
                               "imphmr_jax.convert)").items():
        _set(tree, key.split("/"), value)
    return tree


# ---------------------------------------------------------------------------------------- CLI


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imphmr_jax.convert",
        description="Convert torchvision ResNet or SPIN HMR PyTorch weights to a Flax .npz tree.")
    parser.add_argument("--torch", required=True,
                        help=".pt/.pth file (or an .npz of the torch state dict)")
    parser.add_argument("--kind", required=True, choices=["resnet50", "resnet18", "resnet34", "spin"])
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--non-strict", action="store_true",
                        help="convert despite missing/unexpected keys (they are printed)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (FileNotFoundError, ImportError, ValueError) as e:  # all about the input file
        from imphmr_jax import cli
        if cli.debug_enabled():
            raise
        cli.report(e)  # one line: "error: <message>"
        return 1


def _run(args) -> int:
    if args.torch.endswith(".npz"):
        state = _unwrap(read_npz(args.torch, "PyTorch weights (a state dict saved with np.savez)"))
    else:
        state = load_torch_file(args.torch)
    strict = not args.non_strict
    if args.kind == "spin":
        backbone, reg, mean, report = _spin_checked(state, (3, 4, 6, 3), "bottleneck", strict,
                                                    f"{args.torch} (spin)")
        tree = {"backbone": backbone, "regressor": {"params": reg}, "mean_params": mean}
    else:
        stages, block = RESNET_STAGES[args.kind]
        tree, report = _resnet_checked(state, stages, block, strict, f"{args.torch} ({args.kind})")
    save_npz(args.out, tree)
    print(f"converted {len(report['converted'])} keys ({args.kind}, width {report['width']}) "
          f"-> {args.out}")
    if report["ignored"]:
        n_bn = sum(k.endswith("num_batches_tracked") for k in report["ignored"])
        others = [k for k in report["ignored"] if not k.endswith("num_batches_tracked")]
        print(f"ignored: {n_bn} num_batches_tracked counters"
              + (f"; {others} (ImageNet classifier, not used)" if others else ""))
    for name in ("missing", "unexpected"):
        if report[name]:
            print(f"{name} ({len(report[name])}): {report[name]}")
    return 0


if __name__ == "__main__":
    from imphmr_jax import cli
    cli.run(main)
