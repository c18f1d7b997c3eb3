"""Inference throughput: ImpHMR at feature-map resolution 1, 2, 4, 6 vs the baseline vs PyTorch SPIN.

    python bench/inference.py [--batches 1,64] [--iters N] [--resolution 224] [--width 64]
                              [--depth 50] [--skip-torch]

The speed study of the paper (ImpHMR supplementary Sec. 6.4, docs/evaluation.md#inference-speed:
88.8 / 88.4 / 87.1 / 78.2 fps at resolution 1 / 2 / 4 / 6, RTX 2080Ti, batch 1), on whatever JAX
device is the default (CPU here). Rows:

  imphmr-mXm   ImpHMR (eval mode, one view at φ = 0, no silhouette decoder) with an m x m
               rendered feature map (32 samples per ray);
  baseline     the same backbone and regressor, global average pool, no field (SPIN);
  torch-spin   the hand-written PyTorch SPIN forward of `imphmr_jax.testing.torch_reference`
               (torch.no_grad, eval-mode BN, NCHW), torch.set_num_threads(number of CPUs).

All models share one random SPIN state dict (`random_spin_state`): PyTorch runs it directly, the
JAX baseline runs it converted with `convert.spin_from_torch`, and the ImpHMR rows take the same
backbone and regressor; their attention / field / AGG parameters come from `model.init` with an
rbg key (threefry keys make XLA:CPU compile the initialisers slowly). A parity line checks the JAX
baseline against PyTorch on the first batch.

Every JAX forward is jit-compiled ahead of time (compile time printed, excluded), run once to warm
up (excluded) and then timed with block_until_ready; PyTorch gets one excluded warm-up call too.
Timed calls go round-robin over the models (one call each per round) so drift of the machine hits
every row alike; the median of the rounds is reported. --iters overrides the defaults (10 rounds at
batch 1, 3 at batch >= 16; a ResNet-50 batch of 64 at 224² takes seconds on a few CPU cores).

Targets checked at the end:
  - ImpHMR 4x4 within 15% of the baseline's throughput: images/s ratio >= 0.85 at every batch;
  - JAX baseline at least on par with PyTorch at batch 64: JAX images/s >= PyTorch images/s.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from imphmr_jax import convert
from imphmr_jax.models.imphmr import BackboneConfig, ImpHMR
from imphmr_jax.testing.torch_reference import make_torch_spin_forward, random_spin_state

MAP_SIZES = (1, 2, 4, 6)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def default_iters(batch: int) -> int:
    return 10 if batch < 16 else 3


def build_variables(model, spin_backbone, spin_regressor, seed=0):
    """Variables of `model` with the converted SPIN backbone and regressor swapped in.

    Shapes do not depend on the image size, so the remaining parameters (attention, field, AGG) are
    initialised on one 64² image, which keeps the init compile short.
    """
    init = jax.jit(lambda k, x: model.init(k, x, None, False))
    variables = init(jax.random.key(seed, impl="rbg"), jnp.zeros((1, 64, 64, 3), jnp.float32))
    variables = jax.tree.map(np.asarray, variables)
    params, stats = dict(variables["params"]), dict(variables.get("batch_stats", {}))
    for tree, name, new in ((params, "backbone", spin_backbone["params"]),
                            (stats, "backbone", spin_backbone["batch_stats"]),
                            (params, "regressor", spin_regressor)):
        shapes = lambda t: jax.tree.map(np.shape, t)
        if shapes(tree[name]) != shapes(new):
            raise ValueError(f"{name}: converted SPIN weights do not fit the model's tree")
        tree[name] = new
    return jax.device_put({"params": params, "batch_stats": stats})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batches", default="1,64", help="comma-separated batch sizes (1,64)")
    ap.add_argument("--iters", type=int, default=None,
                    help="timed rounds per batch (default 10 at batch < 16, else 3)")
    ap.add_argument("--resolution", type=int, default=224, help="input image side (224)")
    ap.add_argument("--width", type=int, default=64, help="ResNet width (64)")
    ap.add_argument("--depth", type=int, default=50, choices=(18, 34, 50), help="ResNet depth (50)")
    ap.add_argument("--skip-torch", action="store_true", help="no PyTorch rows")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    stages, block = convert.RESNET_STAGES[f"resnet{args.depth}"]
    ncpu = cpu_count()

    torch = None
    if not args.skip_torch:
        try:
            import torch
        except ImportError:
            print("torch not installed: PyTorch rows skipped")
        else:
            torch.set_num_threads(ncpu)

    print(f"jax {jax.__version__} (jaxlib {jax.lib.__version__}), backend {jax.default_backend()}, "
          f"device {jax.devices()[0].device_kind} x {len(jax.devices())}")
    if torch is not None:
        print(f"torch {torch.__version__}, intra-op threads {torch.get_num_threads()}, "
              f"inter-op threads {torch.get_num_interop_threads()}")
    print(f"CPUs {ncpu} ({platform.processor() or platform.machine()}); XLA:CPU uses one intra-op "
          f"thread per CPU; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"load average (1, 5, 15 min) at start: {load_average()} -- the timings assume an "
          f"otherwise idle machine; OpenMP (PyTorch) slows down badly when cores are shared")
    print(f"ResNet-{args.depth} width {args.width}, input {args.resolution}², float32, eval mode, "
          f"one view φ = 0; compile and warm-up excluded\n")

    sd = random_spin_state(stages, block, args.width)
    spin_backbone, spin_regressor, mean = convert.spin_from_torch(sd, stages, block)
    backbone = BackboneConfig(depth=args.depth, width=args.width)
    channels = args.width * 8 * (4 if block == "bottleneck" else 1)  # M_f = encoder channels (2048)
    models = {"baseline": ImpHMR(variant="baseline", backbone=backbone, mean_params=mean,
                                 use_decoder=False)}
    for m in MAP_SIZES:
        models[f"imphmr-{m}x{m}"] = ImpHMR(variant="imphmr", backbone=backbone, map_size=m,
                                           feature_size=channels, mean_params=mean,
                                           use_decoder=False)
    t0 = time.perf_counter()
    variables = {name: build_variables(model, spin_backbone, spin_regressor)
                 for name, model in models.items()}
    print(f"parameters initialised in {time.perf_counter() - t0:.1f} s")
    torch_fwd = make_torch_spin_forward(sd, stages, block) if torch is not None else None

    rows = []  # (model, batch, seconds per batch)
    for batch in batches:
        iters = args.iters or default_iters(batch)
        images = np.random.default_rng(batch).normal(
            size=(batch, args.resolution, args.resolution, 3)).astype(np.float32)
        x = jax.device_put(images)
        calls, compile_s = {}, {}
        for name, model in models.items():
            t = time.perf_counter()
            fn = jax.jit(lambda v, x, model=model: model.apply(v, x, None, False))
            compiled = fn.lower(variables[name], x).compile()
            compile_s[name] = time.perf_counter() - t
            calls[name] = (lambda c=compiled, v=variables[name]: jax.block_until_ready(c(v, x)))
        if torch_fwd is not None:
            xt = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
            calls["torch-spin"] = lambda: torch_fwd(xt)
        print(f"batch {batch}: compile " + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items())
              + f"; {iters} timed rounds")

        warm = {name: call() for name, call in calls.items()}  # warm-up, excluded
        if torch_fwd is not None:
            jb, tb = warm["baseline"], warm["torch-spin"]
            err = max(float(np.abs(np.asarray(jb[k])[:, 0] - tb[k].numpy()).max()
                            / max(np.abs(tb[k].numpy()).max(), 1e-12))
                      for k in ("pose_6d", "betas", "cam"))
            print(f"  parity JAX baseline vs PyTorch (max rel. error of pose_6d/betas/cam): {err:.1e}")
        times = {name: [] for name in calls}
        for _ in range(iters):
            for name, call in calls.items():
                t = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t)
        rows += [(name, batch, statistics.median(ts)) for name, ts in times.items()]

    sec = {(name, batch): s for name, batch, s in rows}
    ips = {key: key[1] / s for key, s in sec.items()}
    print(f"\n{'model':<12} {'batch':>5} {'ms/batch':>10} {'images/s':>9} {'vs JAX baseline':>16}")
    for name, batch, s in rows:
        ratio = ips[(name, batch)] / ips[("baseline", batch)]
        print(f"{name:<12} {batch:>5} {1e3 * s:>10.1f} {batch / s:>9.2f} {ratio:>15.3f}x")

    print(f"\nload average at end: {load_average()}\n")
    ratios = {b: ips[("imphmr-4x4", b)] / ips[("baseline", b)] for b in batches}
    ok = all(r >= 0.85 for r in ratios.values())
    print(f"[{'PASS' if ok else 'FAIL'}] ImpHMR 4x4 within 15% of the baseline's throughput "
          f"(images/s ratio >= 0.85): " + ", ".join(f"batch {b}: {r:.3f}" for b, r in ratios.items()))
    if ("torch-spin", 64) in ips:
        r = ips[("baseline", 64)] / ips[("torch-spin", 64)]
        print(f"[{'PASS' if r >= 1.0 else 'FAIL'}] JAX baseline at least on par with PyTorch at batch 64 "
              f"(JAX / PyTorch images/s = {r:.3f}, needs >= 1.0)")
    else:
        print("[n/a ] JAX baseline at least on par with PyTorch at batch 64: "
              "needs batch 64 in --batches and torch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
