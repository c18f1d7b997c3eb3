"""NeuHMR's end-to-end default job: `python -m neuhmr_jax.default_job --workdir out/neuhmr`.

On a fresh install, with nothing downloaded, both systems in one pipeline:
  1. ImpHMR's default job (`imphmr_jax.default_job`: synthetic data, ~10 min of training,
     evaluation) in <workdir>/imphmr — the per-frame estimator whose output NeuHMR refines;
  2. the synthetic GHN (configs/neuhmr/ghn_synthetic.py at `config.ghn.train.num_steps`) trained
     on the multi-view video people in <workdir>/ghn;
  3. held-out monocular clips (`neuhmr_jax.data.synthetic_clips`: people neither model saw, an
     orbiting camera) rendered into <workdir>/clips;
  4. ImpHMR on every frame (crops from the person's box) = the init;
  5. NeuHMR (`neuhmr_jax.optimize.refine`, the GHN frozen) on every clip, outputs (refined.npz,
     per-frame JSON, before/after overlay video, contact sheet) in <workdir>/neuhmr/<clip>;
  6. keypoint fitting (`neuhmr_jax.baselines.fit_keypoints`) on detector-like 2D keypoints (the
     GT joints' projections with noise and outliers, `synthetic_clips.detector_keypoints`);
  7. the synthetic video protocol (`neuhmr_jax.evaluation.evaluate_synthetic`) for init,
     keypoint fitting and NeuHMR: MPJPE, PA-MPJPE, PVE pooled, per motion family and per joint,
     printed and written to <workdir>/results.md, results.json and errors.png.

Re-running reuses what is finished (config.reuse): a completed ImpHMR run, a GHN trained to
`num_steps`, the rendered clips, and the inits. Any field can be overridden, e.g.
`--config.ghn.train.num_steps=1500 --config.optimize.optim.steps=1000`.
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional

import numpy as np

from imphmr_jax.cli import expand_path
from imphmr_jax.training import startup

METHODS = ("init", "keypoint fitting", "NeuHMR")


def _log(message: str) -> None:
    print(f"[neuhmr default job] {message}", flush=True)


# ------------------------------------------------------------------------------------- stages
def train_imphmr(config, workdir: str) -> dict:
    """ImpHMR's default job in <workdir>/imphmr (skipped when its results exist for the same
    number of steps and config.reuse)."""
    from imphmr_jax import default_job as imphmr_job
    out = os.path.join(workdir, "imphmr")
    path = os.path.join(out, "results.json")
    if config.reuse and os.path.isfile(path):
        with open(path) as f:
            summary = json.load(f)
        if int(summary.get("steps", -1)) == int(config.imphmr.train.num_steps):
            _log(f"reusing the ImpHMR run in {out}")
            return summary
    c = config.imphmr.copy_and_resolve_references()
    c.unlock()
    c.data.data_dir = os.path.join(out, "data")
    return imphmr_job.run(c, out)


def train_ghn(config, workdir: str) -> str:
    """The synthetic GHN in <workdir>/ghn (resumes; skipped when trained to num_steps)."""
    from imphmr_jax.training.checkpoint import CheckpointManager
    from neuhmr_jax import train_ghn as train_lib
    out = os.path.join(workdir, "ghn")
    steps = int(config.ghn.train.num_steps)
    ckpt = os.path.join(out, "checkpoints")
    if config.reuse and os.path.isdir(ckpt) and os.path.isfile(os.path.join(out, "config.json")):
        latest = CheckpointManager(ckpt).latest_step()
        if latest is not None and latest >= steps:
            _log(f"reusing the GHN in {out} (step {latest})")
            return out
    c = config.ghn.copy_and_resolve_references()
    c.unlock()
    if c.data.data_dir == "out/neuhmr/data":  # the config's default: inside the workdir
        c.data.data_dir = os.path.join(workdir, "data")
    train_lib.train_ghn(c, out)
    return out


def held_out_clips(config, workdir: str, body_name: str) -> list:
    """The held-out clips, rendered into <workdir>/clips once (re-read when the settings
    match)."""
    from neuhmr_jax.data import synthetic_clips
    k = config.clips
    out = os.path.join(workdir, "clips")
    settings = {"num_clips": int(k.num_clips), "num_frames": int(k.num_frames),
                "image_size": int(k.image_size), "seed": int(k.seed), "split": str(k.split),
                "body": body_name}
    if config.reuse and os.path.isfile(os.path.join(out, synthetic_clips.CLIPS_FILE)):
        info = synthetic_clips.clips_info(out)
        if info.get("settings") == settings:
            _log(f"reusing the clips in {out}")
            return synthetic_clips.read_clips(out)
    clips = synthetic_clips.render_clips(k.num_clips, k.num_frames, split=k.split,
                                         image_size=k.image_size, body=body_name, seed=k.seed)
    synthetic_clips.write_clips(clips, out, body=body_name, settings=settings)
    return clips


def mask_boxes(masks, margin: float = 0.05) -> np.ndarray:
    """(T, 4) [x0, y0, x1, y1] boxes of (T, H, W) masks, grown by `margin` of their size (a
    person detector's box); the whole frame where a mask is empty."""
    boxes = []
    for m in masks:
        rows, cols = np.nonzero(m)
        if rows.size == 0:
            boxes.append([0.0, 0.0, float(m.shape[1]), float(m.shape[0])])
            continue
        x0, x1, y0, y1 = cols.min(), cols.max() + 1.0, rows.min(), rows.max() + 1.0
        g = margin * max(x1 - x0, y1 - y0)
        boxes.append([max(0.0, x0 - g), max(0.0, y0 - g), min(m.shape[1], x1 + g),
                      min(m.shape[0], y1 + g)])
    return np.asarray(boxes, np.float64)


def imphmr_inits(clips, imphmr_dir: str, out: str, reuse: bool) -> dict:
    """ImpHMR on every frame of every clip (boxes from the masks), cached as <out>/<clip>.npz."""
    from imphmr_jax import inference
    from neuhmr_jax.data import inits
    os.makedirs(out, exist_ok=True)
    result, predictor = {}, None
    for clip in clips:
        path = os.path.join(out, clip.name + ".npz")
        if reuse and os.path.isfile(path):
            result[clip.name] = inits.load_npz(path).check_num_frames(clip.num_frames)
            continue
        if predictor is None:
            loaded = inference.load_model(workdir=os.path.join(imphmr_dir, "train"))
            predictor = inference.Predictor.from_loaded(loaded, batch_size=16)
        init = inits.load_imphmr(list(clip.frames), predictor, boxes=mask_boxes(clip.masks),
                                 K=clip.K, progress=False)
        init = init.replace(source=f"ImpHMR on {clip.name}")
        inits.save_npz(init, path)
        result[clip.name] = init
    return result


def keypoint_fits(config, clips, init_by_clip: dict, body) -> dict:
    """Keypoint fitting of every clip on its detector-like keypoints."""
    from neuhmr_jax import baselines
    from neuhmr_jax.data import synthetic_clips
    d = config.detector
    out = {}
    for i, clip in enumerate(clips):
        rng = np.random.default_rng([int(d.seed), i])
        kp, conf = synthetic_clips.detector_keypoints(
            synthetic_clips.gt_joints(body, clip), clip.K, rng, noise_px=d.noise_px,
            outlier_prob=d.outlier_prob, outlier_px=d.outlier_px,
            image_size=clip.frames.shape[1:3])
        out[clip.name] = baselines.fit_keypoints(body, init_by_clip[clip.name], kp, conf, clip.K,
                                                 steps=int(config.fitting.steps),
                                                 lr=float(config.fitting.lr), progress=False)
    return out


def neuhmr_refine(config, clips, init_by_clip: dict, ghn_dir: str, out: str, *,
                  overlay_clips: Optional[int] = None) -> dict:
    """NeuHMR on every clip against the GHN (its checkpoint `config.optimize.ghn_checkpoint`);
    writes <out>/<clip> (refined.npz, ..., the overlay for the first `overlay_clips` clips,
    default config.overlay_clips). Returns {clip: Init}."""
    from neuhmr_jax import optimize
    from neuhmr_jax.data.inits import Init
    from neuhmr_jax.train_ghn import load_ghn
    oc = config.optimize
    ghn, variables, ghn_config = load_ghn(ghn_dir, str(oc.ghn_checkpoint))
    overlay_clips = config.overlay_clips if overlay_clips is None else overlay_clips
    side = oc.image_side if oc.image_side is not None else int(ghn_config.data.image_size)
    result = {}
    for i, clip in enumerate(clips):
        video = optimize.Video(clip.frames, clip.K, clip.masks if config.clips.use_masks else None)
        init = init_by_clip[clip.name]
        t = time.time()
        refined = optimize.refine(ghn, variables, optimize.working_video(video, side), init, oc,
                                  progress=bool(oc.optim.progress))
        seconds = time.time() - t
        optimize.write_outputs(os.path.join(out, clip.name), video, init, refined, ghn.body,
                               overlay=i < int(overlay_clips), overlay_side=256,
                               fps=clip.fps, config=oc)
        result[clip.name] = Init(refined.poses, refined.betas, refined.transl,
                                 source=f"NeuHMR on {clip.name}")
        _log(f"NeuHMR {clip.name}: {clip.num_frames} frames, {seconds:.0f} s "
             f"({seconds / clip.num_frames:.1f} s/frame), "
             f"{refined.nonfinite_steps} non-finite steps skipped")
    return result


# ------------------------------------------------------------------------------------- report
def report(clips, results: dict, workdir: str, timings: dict, config) -> dict:
    """The comparison (pooled, per motion family, per joint, per clip) printed and written to
    <workdir>/results.md, results.json and errors.png; returns the summary."""
    from neuhmr_jax import evaluation
    pooled = {name: evaluation.pool(r) for name, r in results.items()}
    by_family = {name: evaluation.pool_by(r, "family") for name, r in results.items()}
    init_m = pooled["init"]["metrics"]
    change = {name: {k: pooled[name]["metrics"][k] / init_m[k] - 1.0
                     for k in ("mpjpe", "pa_mpjpe", "pve")} for name in results}
    joints = evaluation.joint_names(len(pooled["init"]["joint_mpjpe"]))
    per_joint = {name: np.asarray(p["joint_mpjpe"], np.float64) for name, p in pooled.items()}
    delta = per_joint["NeuHMR"] - per_joint["init"]
    helped = [joints[j] for j in np.argsort(delta)[:3] if delta[j] < 0]
    hurt = [joints[j] for j in np.argsort(-delta)[:3] if delta[j] > 0]
    verdict = (
        "NeuHMR vs init: MPJPE {:+.1f}%, PA-MPJPE {:+.1f}%, PVE {:+.1f}%; keypoint fitting vs "
        "init: MPJPE {:+.1f}%, PVE {:+.1f}%.".format(
            100 * change["NeuHMR"]["mpjpe"], 100 * change["NeuHMR"]["pa_mpjpe"],
            100 * change["NeuHMR"]["pve"], 100 * change["keypoint fitting"]["mpjpe"],
            100 * change["keypoint fitting"]["pve"]))
    joints_line = (f"Joints NeuHMR helps most: {', '.join(helped) or 'none'}; hurts most: "
                   f"{', '.join(hurt) or 'none'}.")
    o = config.optimize
    intro = (f"{len(clips)} held-out clips x {clips[0].num_frames} frames (people neither model "
             f"saw, an orbiting camera); init = ImpHMR per frame; GHN "
             f"{int(config.ghn.train.num_steps)} steps; NeuHMR {int(o.optim.steps)} steps of "
             f"{int(o.optim.batch_frames)} frames per clip"
             + (", with the clips' masks" if config.clips.use_masks else ", no masks") + ".",
             "", verdict, joints_line, "",
             "Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + ".",
             "", f"Overlays (before | after): {os.path.join(workdir, 'neuhmr')}")
    pooled_table, page = evaluation.comparison_markdown(pooled, by_family,
                                                        title="NeuHMR default job", intro=intro)
    summary = {
        "pooled": {name: p["metrics"] for name, p in pooled.items()},
        "relative_to_init": change,
        "joint_mpjpe": {name: v.tolist() for name, v in per_joint.items()},
        "joint_names": list(joints),
        "clips": {c.name: {"family": c.family, "frames": c.num_frames} for c in clips},
        "seconds": timings,
        "neuhmr_mpjpe_reduction": -change["NeuHMR"]["mpjpe"],
        "neuhmr_pve_reduction": -change["NeuHMR"]["pve"],
        "workdir": workdir,
    }
    evaluation.write_json(os.path.join(workdir, "results.json"), summary)
    evaluation.write_text(os.path.join(workdir, "results.md"), page)
    evaluation.plot_errors(os.path.join(workdir, "errors.png"), results, pooled)
    print(f"\n{pooled_table}\n\n{verdict}\n{joints_line}\n"
          f"results: {os.path.join(workdir, 'results.md')}", flush=True)
    return summary


def run(config, workdir: str) -> dict:
    """The whole job (module docstring); returns the summary written to results.json."""
    import smpl_jax
    from neuhmr_jax import evaluation
    workdir = os.path.abspath(expand_path(workdir))
    os.makedirs(workdir, exist_ok=True)
    timings, t0 = {}, time.time()

    def lap(name, t):
        timings[name] = time.time() - t
        return time.time()

    t = time.time()
    _log("1/6 ImpHMR (the estimator of the init)")
    train_imphmr(config, workdir)
    t = lap("ImpHMR job", t)
    _log("2/6 the synthetic GHN")
    ghn_dir = train_ghn(config, workdir)
    t = lap("GHN training", t)
    body_name = config.ghn.body.model
    body = smpl_jax.load(body_name, num_betas=int(config.ghn.body.num_betas))
    _log("3/6 held-out clips")
    clips = held_out_clips(config, workdir, body_name)
    t = lap("clips", t)
    _log("4/6 ImpHMR on every frame (the init)")
    init = imphmr_inits(clips, os.path.join(workdir, "imphmr"), os.path.join(workdir, "init"),
                        bool(config.reuse))
    t = lap("ImpHMR init", t)
    _log("5/6 keypoint fitting and NeuHMR")
    fitted = keypoint_fits(config, clips, init, body)
    t = lap("keypoint fitting", t)
    refined = neuhmr_refine(config, clips, init, ghn_dir, os.path.join(workdir, "neuhmr"))
    t = lap("NeuHMR", t)
    _log("6/6 evaluation")
    results = {name: evaluation.evaluate_synthetic(clips, preds, body)
               for name, preds in zip(METHODS, (init, fitted, refined))}
    lap("evaluation", t)
    timings["total"] = time.time() - t0
    return report(clips, results, workdir, timings, config)


def main(argv):
    del argv
    startup.quiet_logs()
    from absl import flags
    run(flags.FLAGS.config, flags.FLAGS.workdir)
    return 0


def _define_flags():
    from absl import flags
    from ml_collections import config_flags
    from imphmr_jax import cli
    from neuhmr_jax.config import default_job_config
    config = default_job_config()
    cli.check_argv_overrides("config", config)
    config_flags.DEFINE_config_dict("config", config, "the job's config")
    flags.DEFINE_string("workdir", "out/neuhmr", "output directory")


if __name__ == "__main__":
    from imphmr_jax import cli
    cli.run_absl(main, required=("workdir",), define_flags=_define_flags)
