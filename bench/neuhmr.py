"""NeuHMR refinement cost (`neuhmr_jax.optimize`): seconds per frame of a T-frame video, how it
grows with T (linearly, when every frame is visited a fixed number of times), steps per second
and peak memory. The anchor: SLAHMR needs about a minute per frame; the goal on a GPU is <= 1 s.

    python bench/neuhmr.py [--frames 16,64,256] [--epochs E | --steps-per-frame K | --steps N]
        [--config synthetic|full | --ghn GHN_WORKDIR] [--image-size 64] [--no-masks]
        [--set optim.rays_per_frame=128 ...] [--repeats 1] [--out result.json]
    python bench/neuhmr.py --smoke     # T = 4, 8; 2 steps; tiny GHN and field at 32 px (a test)

The GHN is randomly initialised (`synthetic`: configs/neuhmr/ghn_synthetic.py's renderer at
64 px; `full`: the default GHNConfig at 128 px) unless `--ghn` loads a `train_ghn` run: the cost
does not depend on the weights. The video is synthetic: the GHN's body walks in front of a static
camera at 3 m (a 1 Hz gait, a slow turn, 30 fps); a frame is its silhouette (the mask, drawn from
the projected vertices) shaded with noise on a noisy background; the init is the truth perturbed
by 3 degrees per joint and 2 cm. The refinement is `optimize_config()` (progress off) with
`--set` overrides. A row counts steps = epochs * T / optim.batch_frames (every frame visited
`--epochs` times, so the cost is linear in T) and runs max(2, ceil(steps)) of them.

Per T, in one process: `prepare` (its kernels compiled beforehand on a one-batch clip), then
`refine` on those cues, split by the times at which its loop's steps finish (its progress hook,
`optimize._bar`, is replaced by a clock): init (the field's state and the anchors' bank, up to
the loop), compile (the first step beyond a steady one: the step is compiled per anchor count,
so once per row), the steady step (median gap), optimise = steps x step, and eval (the field at
every frame, with its per-call jit). s/frame = (prepare + init + optimise + eval) / T, compile
excluded; medians over `--repeats`. Peak memory: the device's peak bytes in use where the backend
reports it (GPU), else the process's peak RSS; both only grow, so a row holds the peak up to its
T. 'step MB': XLA's memory analysis of the compiled step (temporaries + outputs). The report ends
with the least-squares line seconds = slope * T + intercept, the ratio of s/frame at the largest
and the smallest T (~1 when linear), and the steps' cost per frame and epoch.

Defaults: 0.5 epochs on a CPU (T = 256 runs 16 steps; the default run takes about 6 minutes on
2 busy cores, prepare being a large part), 4 on an accelerator. Scale the per-epoch line to the
epochs a real run uses (the config's `optim.steps` is a fixed count: steps * batch_frames / T
epochs).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.ghn import compiled_bytes  # noqa: E402

FPS = 30.0


# ------------------------------------------------------------------------------------- inputs
def tiny_ghn_config(image_size: int):
    """ghn_synthetic_config at test size (`--smoke`; tests/ghn_fixtures.py's sizes)."""
    from neuhmr_jax.config import ghn_synthetic_config
    c = ghn_synthetic_config()
    g = c.ghn
    g.feature_width, g.psi_width, g.pe_octaves = 8, 16, 3
    g.volume_resolution, g.volume_embedding, g.volume_widths = 8, 16, (16, 16)
    g.num_samples, g.chunk = 8, 64
    c.data.image_size = image_size
    return c


def smoke_overrides() -> list:
    """optimize_config at test size (`--smoke`)."""
    return ["motion_field.hidden=8", "motion_field.depth=2", "motion_field.fourier_octaves=2",
            "optim.batch_frames=4", "optim.rays_per_frame=64", "optim.eval_batch=8",
            "optim.dilation=2", "optim.silhouette_dilation=1", "matching.num_candidates=16",
            "matching.depth_stride=2"]


def apply_overrides(config, overrides) -> None:
    """`key.sub=value` strings onto a ConfigDict (the value parsed as the field's type)."""
    for item in overrides:
        path, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set wants key=value, got {item!r}")
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        old = node[leaf]
        if isinstance(old, bool):
            value = text.lower() in ("1", "true", "yes")
        elif isinstance(old, (int, float, str)):
            value = type(old)(text)
        else:
            value = json.loads(text)
        node[leaf] = value


def synthetic_clip(body, num_frames: int, image_size: int, seed: int = 0, masks: bool = True):
    """A walking body in front of a static camera: (Video, init dict).

    Camera frame (x right, y down, z forward): the body faces the camera at 3 m, swinging its
    legs and arms at 1 Hz and turning +-17 degrees; the frames are its silhouettes (the masks)
    shaded with noise on a noisy background. The init is the truth perturbed."""
    import smpl_jax
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    from neuhmr_jax.optimize import Video
    rng = np.random.default_rng(seed)
    T, S = int(num_frames), int(image_size)
    w = 2 * np.pi * np.arange(T) / FPS  # 1 Hz
    pose = np.zeros((T, 24, 3))
    root = (Rotation.from_euler("y", 0.3 * np.sin(0.25 * w)[:, None])
            * Rotation.from_euler("x", np.pi))  # upright, facing the camera
    pose[:, 0] = root.as_rotvec()
    pose[:, 1, 0], pose[:, 2, 0] = 0.4 * np.sin(w), -0.4 * np.sin(w)    # hips
    pose[:, 4, 0], pose[:, 5, 0] = 0.3 * (1 + np.sin(w)), 0.3 * (1 - np.sin(w))  # knees
    pose[:, 16, 2], pose[:, 17, 2] = -1.2, 1.2                          # arms down
    pose[:, 16, 1] = pose[:, 17, 1] = 0.3 * np.sin(w)                   # arm swing
    pose = pose.astype(np.float32)
    betas = np.zeros((T, 10), np.float32)
    out = jax.jit(lambda p, b: smpl_jax.forward(body, p, b))(jnp.asarray(pose), jnp.asarray(betas))
    # SMPL rotates about the root joint: transl puts it (the pelvis) at (x, 0, 3 m).
    pelvis = np.stack([0.2 * np.sin(0.1 * w), np.zeros(T), np.full(T, 3.0)], -1)
    transl = (pelvis - np.asarray(out.joints[:, 0])).astype(np.float32)
    verts = np.asarray(out.vertices) + transl[:, None]

    K = np.array([[1.2 * S, 0, S / 2], [0, 1.2 * S, S / 2], [0, 0, 1]], np.float32)
    # The silhouette: the projected vertices' pixels, closed and filled (no rasterizer to compile).
    uv = verts[..., :2] / verts[..., 2:] * np.diag(K)[:2] + K[:2, 2]
    ij = np.clip(np.floor(uv).astype(np.int64), 0, S - 1)
    sil = np.zeros((T, S, S), bool)
    sil[np.arange(T)[:, None], ij[..., 1], ij[..., 0]] = True
    sil = np.stack([ndimage.binary_fill_holes(ndimage.binary_closing(m, np.ones((3, 3)),
                                                                     iterations=2))
                    for m in sil])
    shade = np.linspace(0.6, 1.0, S, dtype=np.float32)[None, :, None, None]
    person = np.array([200, 120, 90], np.float32) * shade + rng.normal(0, 10, (T, S, S, 3))
    background = 110 + rng.normal(0, 20, (T, S, S, 3))
    images = np.clip(np.where(sil[..., None], person, background), 0, 255).astype(np.uint8)

    noisy = pose + rng.normal(0, np.deg2rad(3.0), pose.shape).astype(np.float32)
    init = {"poses": noisy.astype(np.float32), "betas": betas,
            "transl": (transl + rng.normal(0, 0.02, transl.shape)).astype(np.float32)}
    return Video(images, K, sil if masks else None), init


# ------------------------------------------------------------------------------------- measure
def peak_memory_bytes() -> tuple:
    """(bytes, what): the device's peak bytes in use where reported, else the process's max RSS."""
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process peak RSS"


def step_bytes(ghn, variables, video, init, config, prepared):
    """XLA's memory analysis of the compiled refinement step of this video (None where it is not
    reported). The step's arguments are built the way `refine` builds them (its private helpers),
    so the lowering is the cached one `refine` ran."""
    from imphmr_jax.training import sharding
    from neuhmr_jax import optimize as O
    try:
        mesh = sharding.make_mesh()
        rep = sharding.replicated(mesh)
        field, tx, step, _ = O._compiled_step(ghn, O._step_options(config), mesh,
                                              video.masks is not None)
        state = O._init_state(field, None, tx, mesh, jax.random.PRNGKey(0))
        init = O.as_init(init, video.num_frames)
        clip = O._Clip(video, init, prepared.betas, ghn.body, ghn.config.background,
                       config.optim.silhouette_dilation)
        idx = np.arange(int(config.optim.batch_frames)) % video.num_frames
        batch = sharding.global_batch(O._host_batch(clip, prepared, idx), mesh, O.BATCH_KEYS)
        bank = jax.device_put(O._bank(video, init, prepared, False), rep)
        return compiled_bytes(step, state, batch, bank, jax.device_put(variables, rep))
    except Exception:  # noqa: BLE001 - the private layout changed: report no number
        return None


class _StepClock:
    """Stands in for `refine`'s progress bar: `update` is called as each step's metrics arrive
    (the step has finished), `close` after the last."""

    def __init__(self):
        self.start, self.ticks, self.closed = time.perf_counter(), [], None

    def update(self, n: int = 1) -> None:
        self.ticks.append(time.perf_counter())

    def set_postfix(self, **_) -> None:
        pass

    def close(self) -> None:
        self.closed = time.perf_counter()


@contextlib.contextmanager
def step_clocks():
    """Within: every `refine` appends a `_StepClock` to the yielded list (its loop's progress bar,
    `optimize._bar`, replaced; prepare's bar is off)."""
    from neuhmr_jax import optimize as O
    clocks, original = [], O._bar

    def bar(enabled, total, desc):
        if desc != "refine":
            return None
        clocks.append(_StepClock())
        return clocks[-1]

    O._bar = bar
    try:
        yield clocks
    finally:
        O._bar = original


def timed_refine(ghn, variables, video, init, config, prepared) -> tuple:
    """({init, compile, step, eval} seconds of one `refine` call, its Result).

    init: from the call to the loop (the field's state, the anchors' bank); compile: the first
    step's time beyond a steady step; step: the median gap between steps' completions (>= 2
    steps); eval: from the loop's end to the return (the evaluation at every frame, with its
    jit)."""
    from neuhmr_jax import optimize as O
    with step_clocks() as clocks:
        t0 = time.perf_counter()
        res = O.refine(ghn, variables, video, init, config, prepared=prepared, progress=False)
        t1 = time.perf_counter()
    c = clocks[-1] if clocks else None
    if c is None or len(c.ticks) < 2 or c.closed is None:
        raise RuntimeError("refine's loop no longer reports its steps through optimize._bar: "
                           "update bench/neuhmr.py's step clock")
    step = float(np.median(np.diff(c.ticks)))
    return {"init": c.start - t0, "compile": max(c.ticks[0] - c.start - step, 0.0), "step": step,
            "eval": t1 - c.closed}, res


def bench_frames(ghn, variables, config, T: int, steps: float, image_size: int, masks: bool,
                 repeats: int) -> dict:
    """One row: `prepare` and `refine` on a T-frame synthetic clip. `steps` is the nominal
    (possibly fractional) step count the row's cost counts; max(2, ceil(steps)) are run."""
    from neuhmr_jax import optimize as O
    config = config.copy_and_resolve_references()
    config.optim.steps = max(2, math.ceil(steps))
    video, init = synthetic_clip(ghn.body, T, image_size, seed=T, masks=masks)
    t_prep, runs = [], []
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        prep = O.prepare(ghn, variables, video, init, config)
        t_prep.append(time.perf_counter() - t0)
        runs.append(timed_refine(ghn, variables, video, init, config, prep))
    med = {k: statistics.median(r[0][k] for r in runs) for k in runs[0][0]}
    prepare_s, optimise_s = statistics.median(t_prep), steps * med["step"]
    total = prepare_s + med["init"] + optimise_s + med["eval"]
    res = runs[-1][1]
    mem, mem_kind = peak_memory_bytes()
    return {"frames": T, "steps": steps, "steps_run": int(config.optim.steps),
            "epochs": steps * int(config.optim.batch_frames) / T,
            "anchors": int(len(prep.anchors)), "prepare_s": prepare_s,
            "compile_s": runs[0][0]["compile"], "init_s": med["init"], "step_s": med["step"],
            "optimise_s": optimise_s, "eval_s": med["eval"], "total_s": total,
            "s_per_frame": total / T, "steps_per_s": 1.0 / med["step"],
            "nonfinite_steps": int(res.nonfinite_steps),
            "final_loss": float(res.history["loss"][-1]), "peak_memory_bytes": mem,
            "peak_memory_kind": mem_kind,
            "step_bytes": step_bytes(ghn, variables, video, init, config, prep)}


def linear_fit(rows) -> dict:
    """Least-squares total seconds = slope * T + intercept, and the s/frame ratio of the largest
    to the smallest T (1 when the cost is linear with no fixed part)."""
    T = np.array([r["frames"] for r in rows], np.float64)
    y = np.array([r["total_s"] for r in rows], np.float64)
    slope, intercept = np.polyfit(T, y, 1) if len(rows) > 1 else (y[0] / T[0], 0.0)
    lo, hi = rows[int(np.argmin(T))], rows[int(np.argmax(T))]
    return {"slope_s_per_frame": float(slope), "intercept_s": float(intercept),
            "per_frame_ratio_largest_smallest": hi["s_per_frame"] / lo["s_per_frame"]}


def nominal_steps(T: int, batch_frames: int, args) -> float:
    """The steps a T-frame row counts: epochs * T / batch_frames, K * T, or the fixed count."""
    if args.steps:
        return float(args.steps)
    if args.steps_per_frame:
        return float(args.steps_per_frame) * T
    epochs = args.epochs if args.epochs is not None else (
        0.5 if jax.default_backend() == "cpu" else 4.0)
    return float(epochs) * T / batch_frames


# ------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", help="comma-separated clip lengths T (default 16,64,256)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=float,
                   help="visits of every frame: steps = epochs * T / optim.batch_frames\n"
                        "(default 0.5 on CPU, 4 on an accelerator)")
    g.add_argument("--steps-per-frame", type=float, help="steps = K * T")
    g.add_argument("--steps", type=int, help="the same step count for every T (>= 2)")
    ap.add_argument("--config", choices=("synthetic", "full"), default="synthetic",
                    help="the randomly initialised GHN's config")
    ap.add_argument("--ghn", help="a train_ghn run directory (its latest checkpoint) instead")
    ap.add_argument("--image-size", type=int, help="frame side, px (default: the GHN's)")
    ap.add_argument("--no-masks", action="store_true",
                    help="no masks: the person region is the init's dilated silhouette")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="optimize_config override, e.g. optim.rays_per_frame=128 (repeatable)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per T (median)")
    ap.add_argument("--smoke", action="store_true",
                    help="T = 4, 8, 2 steps, a tiny GHN and field at 32 px (a test)")
    ap.add_argument("--out", help="write the rows and the fit as JSON here")
    args = ap.parse_args(argv)
    if args.steps is not None and args.steps < 2:
        ap.error("--steps must be >= 2 (a steady step is timed between two)")
    if args.smoke:
        args.frames = args.frames or "4,8"
        args.steps, args.epochs, args.steps_per_frame = args.steps or 2, None, None
        args.image_size = args.image_size or 32
        args.set = smoke_overrides() + args.set
    args.frames = args.frames or "16,64,256"
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from neuhmr_jax.config import ghn_config, ghn_synthetic_config, optimize_config
    from neuhmr_jax import optimize as O
    from neuhmr_jax.train_ghn import build_ghn, load_ghn

    t0 = time.perf_counter()
    if args.ghn:
        ghn, variables, ghn_cfg = load_ghn(args.ghn)
        what = f"trained GHN {args.ghn}"
    else:
        ghn_cfg = (tiny_ghn_config(args.image_size) if args.smoke else
                   ghn_synthetic_config() if args.config == "synthetic" else ghn_config())
        ghn = build_ghn(ghn_cfg)
        what = "tiny GHN (smoke)" if args.smoke else f"random-init GHN ({args.config})"
    size = int(args.image_size or ghn_cfg.data.image_size)
    if not args.ghn:
        variables = jax.jit(ghn.init, static_argnums=1)(jax.random.PRNGKey(0), (size, size))
    config = optimize_config()
    apply_overrides(config, args.set)
    config.optim.progress = False
    B = int(config.optim.batch_frames)
    frames = sorted({int(f) for f in args.frames.split(",") if f.strip()})
    if not frames or frames[0] < 1:
        raise SystemExit(f"--frames wants positive clip lengths, got {args.frames!r}")
    masks = not args.no_masks

    # Compile prepare's kernels (their shapes are per batch, not per T) on a one-batch clip.
    video, init = synthetic_clip(ghn.body, B, size, masks=masks)
    O.prepare(ghn, variables, video, init, config)
    setup_s = time.perf_counter() - t0

    dev = jax.devices()[0]
    o, m = config.optim, config.motion_field
    print(f"# bench/neuhmr.py: jax {jax.__version__}, {dev.platform} ({dev.device_kind}) x "
          f"{jax.device_count()}, {platform.machine()}; {what}, {size}² frames, "
          f"{ghn.config.num_samples} samples/ray, masks {'given' if masks else 'from the init'}; "
          f"field {m.hidden}x{m.depth}, {o.batch_frames} frames x {o.rays_per_frame} rays per "
          f"step; setup {setup_s:.1f} s")
    rows = []
    for T in frames:
        rows.append(bench_frames(ghn, variables, config, T, nominal_steps(T, B, args), size,
                                 masks, args.repeats))
    fit = linear_fit(rows)

    mem_kind = rows[-1]["peak_memory_kind"]
    print(f"| T | steps run | epochs | anchors | prepare s | compile s | init s | optimise s | "
          f"eval s | s/frame | steps/s | {mem_kind} MB | step MB |")
    print("|---:" * 13 + "|")
    for r in rows:
        sb = "-" if r["step_bytes"] is None else f"{r['step_bytes'] / 2**20:.0f}"
        print(f"| {r['frames']} | {r['steps_run']} | {r['epochs']:.2f} | {r['anchors']} | "
              f"{r['prepare_s']:.2f} | {r['compile_s']:.1f} | {r['init_s']:.2f} | "
              f"{r['optimise_s']:.2f} | {r['eval_s']:.2f} | {r['s_per_frame']:.3f} | "
              f"{r['steps_per_s']:.2f} | {r['peak_memory_bytes'] / 2**20:.0f} | {sb} |")
    print(f"linear fit: {fit['slope_s_per_frame']:.3f} s/frame + {fit['intercept_s']:.2f} s; "
          f"s/frame at T={rows[-1]['frames']} / at T={rows[0]['frames']}: "
          f"{fit['per_frame_ratio_largest_smallest']:.2f}")
    rate = statistics.median(r["steps_per_s"] for r in rows)
    print(f"steps: {1 / (rate * B):.3f} s per frame and epoch ({B} frames per step, median "
          f"{rate:.2f} steps/s); the config's fixed optim.steps = {config.optim.steps} would take "
          f"{config.optim.steps / rate:.0f} s")
    result = {"rows": rows, "fit": fit, "setup_s": setup_s, "jax": jax.__version__,
              "platform": dev.platform, "device_kind": dev.device_kind,
              "devices": jax.device_count(), "ghn": what, "image_size": size, "masks": masks,
              "wall_s": time.perf_counter() - t0,
              "optimize_config": json.loads(config.to_json())}
    print(f"wall {result['wall_s']:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
