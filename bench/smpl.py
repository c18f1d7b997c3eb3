"""SMPL forward / forward+backward speed: smpl_jax (jit) vs smplx (PyTorch CPU), side by side.

    python bench/smpl.py [--batch 64] [--iters 30] [--models default,6890]

Models: 'default' = the packaged default body (smpl_jax/data/default.npz) when it exists, else a
random ~12k-vertex model without pose correctives (the line printed says which); '6890' = a random
6890-vertex model in the official layout with nonzero pose correctives (posedirs). Timings are
medians over --iters runs after warm-up (compilation excluded); 'forward+backward' is the gradient
of sum(vertices**2) with respect to pose and betas. smplx columns are skipped if torch/smplx are
not installed. Times on a shared machine are noisy: compare the ratios of one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def random_arrays(num_vertices, posedirs, seed=0):
    """Random model in the official SMPL key layout (float64)."""
    rng = np.random.default_rng(seed)
    nv = num_vertices
    j_reg = np.zeros((24, nv))
    for j in range(24):
        j_reg[j, rng.choice(nv, 12, replace=False)] = rng.uniform(0.1, 1, 12)
    j_reg /= j_reg.sum(1, keepdims=True)
    weights = rng.uniform(0, 1, (nv, 24)) ** 4
    weights /= weights.sum(1, keepdims=True)
    kintree = np.stack([np.array(SMPL_PARENTS), np.arange(24)])
    out = dict(v_template=rng.uniform(-0.5, 0.5, (nv, 3)),
               shapedirs=rng.normal(0, 0.01, (nv, 3, 10)), J_regressor=j_reg, weights=weights,
               kintree_table=kintree, f=rng.integers(0, nv, (2 * nv, 3)),
               J_regressor_extra=_sparse_rows(rng, 9, nv),
               J_regressor_h36m=_sparse_rows(rng, 17, nv))
    if posedirs:
        out["posedirs"] = rng.normal(0, 0.01, (nv, 3, 207))
    return out


def _sparse_rows(rng, k, nv):
    rows = np.zeros((k, nv))
    for i in range(k):
        rows[i, rng.choice(nv, 30, replace=False)] = rng.uniform(0.1, 1, 30)
    return rows / rows.sum(1, keepdims=True)


def model_arrays(name):
    from smpl_jax import io as smpl_io

    if name == "default":
        try:
            with smpl_io.package_file("default") as path:
                return "default (package data)", smpl_io.read_model_file(path)
        except FileNotFoundError:
            return "default missing: random 12000-vertex model, no posedirs", random_arrays(
                12000, posedirs=False)
    if name.isdigit():
        return f"random {name}-vertex model with posedirs", random_arrays(int(name), posedirs=True)
    return name, smpl_io.read_model_file(name)


def prime_malloc():
    """Put glibc malloc in its steady state before timing anything.

    glibc serves blocks above its mmap threshold with fresh pages (page faults on every call)
    and raises that threshold, up to 32 MB, whenever such a block is freed. So whether a
    library's large temporaries are cheap (reused heap) or expensive (fresh pages) otherwise
    depends on what ran earlier in the process: freeing one 32 MB block first gives both sides
    the state a long-running process reaches anyway.
    """
    block = np.ones((32 << 20) // 8 - 4096)
    del block


def timeit(fn, iters, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_jax(arrays, batch, iters, rng):
    import jax
    import jax.numpy as jnp

    import smpl_jax
    from smpl_jax import io as smpl_io

    model = smpl_io.from_arrays(arrays, num_betas=10)
    pose = jnp.asarray(rng.normal(0, 0.5, (batch, 24, 3)), jnp.float32)
    betas = jnp.asarray(rng.normal(0, 1, (batch, 10)), jnp.float32)

    fwd = jax.jit(lambda m, p, b: smpl_jax.forward(m, p, b).vertices)

    def loss(p, b, m):
        return jnp.sum(smpl_jax.forward(m, p, b).vertices ** 2)

    fwd_bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
    sets = tuple(s for s in ("spin49", "h36m17") if s in model.joint_sets)
    joints24 = jax.jit(lambda m, p, b: smpl_jax.forward(m, p, b, return_vertices=False).joints)
    joints_sets = jax.jit(lambda m, p, b: smpl_jax.forward(
        m, p, b, extra_joints=sets, return_vertices=False).joints)

    def run(f):
        return lambda: jax.block_until_ready(f(model, pose, betas) if f is not fwd_bwd
                                             else f(pose, betas, model))

    out = {
        "forward": timeit(run(fwd), iters),
        "forward+backward": timeit(run(fwd_bwd), iters),
        "joints only (24)": timeit(run(joints24), iters),
    }
    if sets:
        out[f"joints only (24+{'+'.join(sets)})"] = timeit(run(joints_sets), iters)
    return out, model.num_vertices, model.has_pose_correctives


def bench_smplx(arrays, batch, iters, rng):
    import smplx
    import torch
    from smplx.utils import Struct

    data = {k: np.asarray(v) for k, v in arrays.items()}
    if "posedirs" not in data:  # smplx always applies pose correctives
        data["posedirs"] = np.zeros((len(data["v_template"]), 3, 207))
    # (smplx also picks its 21 SMPL vertex joints; for timing their ids do not matter.)
    model = smplx.SMPL(model_path="unused", data_struct=Struct(**data), batch_size=batch,
                       num_betas=10)
    pose = torch.tensor(rng.normal(0, 0.5, (batch, 24, 3)), dtype=torch.float32)
    betas = torch.tensor(rng.normal(0, 1, (batch, 10)), dtype=torch.float32)

    def fwd():
        with torch.no_grad():
            model(global_orient=pose[:, 0], body_pose=pose[:, 1:].reshape(batch, -1), betas=betas)

    def fwd_bwd():
        p = pose.clone().requires_grad_(True)
        b = betas.clone().requires_grad_(True)
        out = model(global_orient=p[:, 0], body_pose=p[:, 1:].reshape(batch, -1), betas=b)
        (out.vertices ** 2).sum().backward()

    t_fwd = timeit(fwd, iters)
    return {"forward": t_fwd, "forward+backward": timeit(fwd_bwd, iters)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--models", default="default,6890",
                        help="comma-separated: default, a vertex count (random model with "
                             "posedirs), or a model file path")
    args = parser.parse_args(argv)

    import jax

    try:
        import smplx  # noqa: F401
        import torch
    except ImportError:
        torch = None
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"python {platform.python_version()}, jax {jax.__version__} "
          f"({jax.devices()[0].platform}, {ncpu} CPUs available to XLA)")
    if torch is not None:
        torch.set_num_threads(ncpu)
        from importlib.metadata import version
        print(f"torch {torch.__version__}, smplx {version('smplx')}, "
              f"torch threads {torch.get_num_threads()} (intra-op), same process")
    else:
        print("torch/smplx not installed: smplx columns skipped")
    prime_malloc()
    print(f"batch {args.batch}, median of {args.iters} runs, times in ms; glibc malloc primed "
          "to its steady state (see prime_malloc)\n")

    header = f"{'model':<28} {'measure':<30} {'smpl_jax':>9} {'smplx':>9} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        label, arrays = model_arrays(name.strip())
        rng = np.random.default_rng(0)
        jax_t, nv, has_pd = bench_jax(arrays, args.batch, args.iters, rng)
        ref = bench_smplx(arrays, args.batch, args.iters, rng) if torch is not None else {}
        print(f"# {label}: V={nv}, pose correctives {'yes' if has_pd else 'no'}")
        for measure, t in jax_t.items():
            # smplx has no joints-only path: its full forward is the reference there.
            r = ref.get(measure, ref.get("forward") if measure.startswith("joints") else None)
            rs = f"{r:9.2f}" if r is not None else f"{'-':>9}"
            sp = f"{r / t:8.1f}x" if r is not None else f"{'-':>9}"
            print(f"{name.strip():<28} {measure:<30} {t:9.2f} {rs} {sp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
