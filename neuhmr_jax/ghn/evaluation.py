"""Evaluation of Φ^GHN on held-out people: full-image renderings of (person, frame, camera) targets
from n reference images of the same person in other frames, scored against the real image.

Metrics (means over targets), all on the person's pixels (the ground-truth mask), images in [0, 1]
composited on the config's background:
  psnr           10 log10(1 / MSE) of the rendering;
  psnr_mean_color  the same for painting the person's mean colour inside the ground-truth mask
                 (the trivial baseline the rendering must beat);
  ssim           the SSIM map (dm-pix, 7×7 Gaussian window) averaged over the mask;
  iou            IoU of the occupancy W > 0.5 with the mask.
A figure per target: the references | target | rendering | occupancy W | depth.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from imphmr_jax.geometry.camera import pixel_centers
from neuhmr_jax.ghn import data as ghn_data
from neuhmr_jax.ghn.model import Camera, References

METRICS = ("psnr", "psnr_mean_color", "ssim", "iou")


def make_render_image(ghn, image_size):
    """jit: (variables, target batch entry) -> Rendering of every pixel of the target image."""
    h, w = image_size
    pixels = jnp.asarray(pixel_centers(h, w)).reshape(-1, 2)

    def render(variables, x):
        refs = References(images=x["ref_image"], cameras=Camera(x["ref_K"], x["ref_R"],
                                                                x["ref_t"]),
                          pose=x["ref_pose"], transl=x["ref_transl"])
        out = ghn.render(variables, Camera(x["K"], x["R"], x["t"]), x["pose"], x["betas"], refs,
                         pixels, transl=x["transl"], image_size=image_size)
        return jax.tree.map(lambda a: a.reshape((h, w) + a.shape[1:]), out._asdict())

    return jax.jit(render)


def image_metrics(rendering: np.ndarray, occupancy: np.ndarray, target: np.ndarray,
                  mask: np.ndarray) -> dict:
    """Metrics of one target (see the module docstring); images (H, W, 3), mask/occupancy (H, W)."""
    import dm_pix
    m = mask > 0.5
    n = max(int(m.sum()), 1)
    mse = float(((rendering - target) ** 2).sum(-1)[m].sum() / (3 * n))
    mean_color = target[m].mean(0) if m.any() else np.zeros(3)
    mse_mean = float(((target[m] - mean_color) ** 2).sum() / (3 * n))
    ssim_map = np.asarray(dm_pix.ssim(jnp.asarray(rendering), jnp.asarray(target),
                                      filter_size=7, return_map=True)).mean(-1)
    # The 'valid' SSIM map is smaller than the image: align it with the mask's centre crop.
    oy = (m.shape[0] - ssim_map.shape[0]) // 2
    ox = (m.shape[1] - ssim_map.shape[1]) // 2
    mc = m[oy:oy + ssim_map.shape[0], ox:ox + ssim_map.shape[1]]
    ssim = float(ssim_map[mc].mean()) if mc.any() else float("nan")
    pred = occupancy > 0.5
    union = np.logical_or(pred, m).sum()
    iou = float(np.logical_and(pred, m).sum() / union) if union else 1.0
    to_psnr = lambda e: float(-10 * np.log10(max(e, 1e-10)))
    return {"psnr": to_psnr(mse), "psnr_mean_color": to_psnr(mse_mean), "ssim": ssim,
            "iou": iou}


def evaluate(ghn, variables, people, config, *, max_targets: int, out_dir: Optional[str] = None,
             max_figures: int = 0, progress: bool = False) -> dict:
    """Render `max_targets` held-out targets of `people`; returns dict(metrics, per_target).

    The targets and their references are drawn with config.eval.seed, so every evaluation of a
    run (and of different runs) sees the same ones. With out_dir: summary.json, per_target.jsonl
    and figures/target_<i>.png (the first `max_figures`).
    """
    image_size = tuple(people.images.shape[1:3])
    render = make_render_image(ghn, image_size)
    rng = np.random.default_rng(config.eval.seed)
    triplets = ghn_data.sample_triplets(rng, people, max_targets, n_refs=config.data.n_refs,
                                        same_camera=config.data.same_camera)
    rows = []
    if out_dir is not None:
        os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    it = range(len(triplets))
    if progress:
        from imphmr_jax.training.writer import progress_bar
        bar = progress_bar(len(triplets), desc="eval GHN")
    else:
        bar = None
    for i in it:
        x = ghn_data.assemble(people, triplets[i:i + 1], config.ghn.background)
        x = jax.tree.map(lambda a: a[0], x)
        out = jax.device_get(render(variables, x))
        row = image_metrics(np.asarray(out["rgb"]), np.asarray(out["occupancy"]),
                            np.asarray(x["image"]), np.asarray(x["mask"]))
        row.update(target=int(triplets[i, 0]), references=[int(j) for j in triplets[i, 1:]])
        rows.append(row)
        if out_dir is not None and i < max_figures:
            figure(x, out, os.path.join(out_dir, "figures", f"target_{i}.png"), row)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    metrics = {k: float(np.nanmean([r[k] for r in rows])) for k in METRICS}
    metrics["count"] = float(len(rows))
    summary = {"metrics": metrics, "per_target": rows}
    if out_dir is not None:
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump({"metrics": metrics}, f, indent=2)
        with open(os.path.join(out_dir, "per_target.jsonl"), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return summary


def figure(x, out, path: str, row: Optional[dict] = None) -> str:
    """One row: the n references | target | rendering | occupancy W | depth, labelled."""
    from imphmr_jax.figures import _pyplot
    plt = _pyplot()
    refs = np.asarray(x["ref_image"])
    panels = [(refs[k], f"reference {k + 1}") for k in range(refs.shape[0])]
    panels += [(np.asarray(x["image"]), "target"), (np.asarray(out["rgb"]), "rendering C")]
    occ = np.asarray(out["occupancy"])
    depth = np.asarray(out["depth"])
    fig, axes = plt.subplots(1, len(panels) + 2, figsize=(2.2 * (len(panels) + 2), 2.6))
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(np.clip(img, 0, 1))
        ax.set_title(title, fontsize=9)
    axes[len(panels)].imshow(occ, cmap="gray", vmin=0, vmax=1)
    axes[len(panels)].set_title("occupancy W", fontsize=9)
    valid = occ > 0.5
    d = np.where(valid, depth, np.nan)
    axes[len(panels) + 1].imshow(d, cmap="viridis")
    axes[len(panels) + 1].set_title("depth", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if row is not None:
        fig.suptitle(f"PSNR {row['psnr']:.1f} dB (mean colour {row['psnr_mean_color']:.1f}), "
                     f"SSIM {row['ssim']:.2f}, IoU {row['iou']:.2f}", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
