"""Input-pipeline throughput vs the ImpHMR train step's consumption, on this machine.

    python bench/data.py [--records 64] [--batches 12] [--skip-train-step]

Records are synthetic ~256² JPEGs made in memory (smooth colour fields + texture + a bright
figure), boxes around the centre (scale ≈ 1.1, i.e. downscaled to 224² and augmented as SPIN).
Rows: the pipeline (grain threads 1 and 2, and optionally 2 worker processes) in images/s and in
images/s per CPU core used; one ImpHMR training step (ResNet-50 at 224², batch 8, 2 views,
value_and_grad of `imphmr_jax.losses.total_loss` on a pipeline batch) in images/s; and the ratio
pipeline/consumption (> 1: the input pipeline keeps up on this machine).
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imphmr_jax.data import augment, pipeline, schema  # noqa: E402


def synthetic_records(n: int, size: int = 256, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    recs = []
    for i in range(n):
        a = rng.uniform(0, 2 * np.pi, 3)
        img = 127 + 80 * np.sin(6 * xx[..., None] * np.cos(a) + 4 * yy[..., None] * np.sin(a) + a)
        img = img + rng.normal(0, 12, img.shape)
        cx, cy = size / 2 + rng.normal(0, 8, 2)
        img[int(cy) - 60:int(cy) + 60, int(cx) - 20:int(cx) + 20] = 230
        b = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(b, "JPEG", quality=90)
        kp = np.concatenate([rng.uniform(cx - 40, cx + 40, (49, 1)),
                             rng.uniform(cy - 90, cy + 90, (49, 1)), np.ones((49, 1))], 1)
        j3 = np.concatenate([rng.normal(0, 0.3, (24, 3)), np.ones((24, 1))], 1)
        recs.append(schema.empty_record(
            image=b.getvalue(), center=[cx, cy], scale=1.1 * 200 / 200 * size / 232,
            keypoints_2d=kp, joints_3d=j3, pose=rng.normal(0, 0.2, 72), betas=rng.normal(size=10),
            has_smpl=1, has_pose_3d=1))
    return recs


def pipeline_rate(records, threads, workers, batch, batches, warmup=2):
    cfg = pipeline.PipelineConfig(img_res=224, batch_size=batch, seed=0, num_threads=threads,
                                  prefetch=2 * batch, num_workers=workers)
    it = pipeline.make_train_iterator([records], [1.0], cfg, process_index=0, process_count=1)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - t0)


def single_sample_ms(records, n=64):
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in range(n):
        augment.process_record(records[i % len(records)], augment.AugmentConfig(), rng, res=224)
    return (time.perf_counter() - t0) / n * 1e3


def train_step_rate(records, batch=8, iters=2):
    import jax
    import jax.numpy as jnp

    import smpl_jax
    from imphmr_jax import losses
    from imphmr_jax.models import ImpHMR

    cfg = pipeline.PipelineConfig(img_res=224, batch_size=batch, seed=0, num_threads=2)
    data = next(pipeline.make_train_iterator([records], [1.0], cfg, process_index=0,
                                             process_count=1))
    labels = {k: jnp.asarray(v) for k, v in data.items() if k not in ("image", "dataset")}
    images = jnp.asarray(data["image"])
    body = smpl_jax.load("default")
    model = ImpHMR()
    phis = jnp.stack([jnp.zeros(batch), jnp.full((batch,), 1.0)], 1)
    key = jax.random.key(0, impl="rbg")
    rngs = {"params": key, "dropout": key, "sampling": key, "density_noise": key}
    variables = jax.jit(lambda r: model.init(r, images[:1], phis[:1], train=False))(rngs)
    sil = None

    def loss(params, batch_stats, k, gt_sil):
        out, _ = model.apply({"params": params, "batch_stats": batch_stats}, images, phis,
                             train=True, rngs={"dropout": k, "sampling": k, "density_noise": k},
                             mutable=["batch_stats"])
        total, _ = losses.total_loss(out, labels, phis, body, gt_silhouette=gt_sil)
        return total

    out_shape = jax.eval_shape(lambda p: model.apply(
        {"params": p, "batch_stats": variables["batch_stats"]}, images, phis, train=True,
        rngs={"dropout": key, "sampling": key, "density_noise": key}, mutable=["batch_stats"])[0],
        variables["params"])
    s = out_shape["silhouette_logits"].shape[-1] if "silhouette_logits" in out_shape else None
    sil = jnp.zeros((batch, s, s), jnp.float32) if s else None  # GT silhouettes: bench/render.py
    step = jax.jit(jax.value_and_grad(loss))
    jax.block_until_ready(step(variables["params"], variables["batch_stats"], key, sil))
    t0 = time.perf_counter()
    for _ in range(iters):
        jax.block_until_ready(step(variables["params"], variables["batch_stats"], key, sil))
    return batch * iters / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--workers", action="store_true", help="also time 2 worker processes")
    ap.add_argument("--skip-train-step", action="store_true")
    ap.add_argument("--train-iters", type=int, default=2)
    args = ap.parse_args()

    records = synthetic_records(args.records)
    kb = np.mean([len(r["image"]) for r in records]) / 1024
    print(f"# {platform.node()} {os.cpu_count()} CPUs; {args.records} synthetic 256² JPEGs "
          f"({kb:.0f} KiB avg), crops 224², batch {args.batch}")
    rows = [("process_record, 1 sample, no threads", 1e3 / single_sample_ms(records), 1)]
    for threads in (1, 2):
        rows.append((f"pipeline, grain threads={threads}",
                     pipeline_rate(records, threads, 0, args.batch, args.batches), threads))
    if args.workers:
        rows.append(("pipeline, 2 worker processes (mp_prefetch)",
                     pipeline_rate(records, 1, 2, args.batch, args.batches), 2))
    consume = None
    if not args.skip_train_step:
        consume = train_step_rate(records, iters=args.train_iters)
    w = max(len(r[0]) for r in rows + [("ImpHMR train step (R50 224², batch 8, 2 views)",)])
    print(f"{'case':<{w}}  {'img/s':>8}  {'img/s/core':>10}  {'pipeline/consumption':>20}")
    for name, rate, cores in rows:
        ratio = f"{rate / consume:20.2f}" if consume else f"{'-':>20}"
        print(f"{name:<{w}}  {rate:8.1f}  {rate / cores:10.1f}  {ratio}")
    if consume:
        print(f"{'ImpHMR train step (R50 224², batch 8, 2 views)':<{w}}  {consume:8.2f}  "
              f"{'':>10}  {'(consumption)':>20}")


if __name__ == "__main__":
    main()
