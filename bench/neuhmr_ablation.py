"""NeuHMR's ablations on the default job's held-out clips, from one script.

    python -m neuhmr_jax.default_job --workdir out/neuhmr          # first: clips, inits, GHN
    python bench/neuhmr_ablation.py --workdir out/neuhmr [--clips 2] [--steps 150] \\
        [--variants S=16,no_matching,...] [--set optim.batch_frames=4 ...]

Variants (each is NeuHMR with one change, run on the same clips from the same ImpHMR init):
  * `default`                  the job's NeuHMR config
  * `S=16`, `S=32`, `S=64`, `S=256`   joint matching with S Gaussian candidates (the default is
                               S = 128; the supplementary's Table 8 varies S the same way)
  * `no_matching`              without the joint-matching term (λ_jm = 0)
  * `no_photometric`           without the photometric term (λ_rgb = 0)
  * `ghn_1/3`, `ghn_2/3`       the GHN's checkpoint at 1/3 and 2/3 of its training steps (Table 7's
                               shape; the job keeps checkpoints every num_steps/3 steps)
  * `ghn_finetuned`            the GHN fine-tuned together with the motion field (the
                               supplementary's ablation; frozen is the default)
A variant whose GHN checkpoint is missing is reported as skipped. Rows: MPJPE / PA-MPJPE / PVE
(mm) pooled over the clips' frames, the change relative to the init and to the default. Writes
<out>/results.md and results.json (default <workdir>/ablation). Seconds per variant are printed;
on a 2-core CPU a variant costs about what the job's NeuHMR stage does, so use --clips / --steps
to shorten a first look.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DEFAULT_S = 128


def variants(ghn_steps: int) -> dict:
    """{name: {dotted optimize-config field: value}}."""
    out = {"default": {}}
    for s in (16, 32, 64, 256):
        out[f"S={s}"] = {"matching.num_candidates": s}
    out["no_matching"] = {"loss.joint_matching": 0.0}
    out["no_photometric"] = {"loss.rgb": 0.0}
    out["ghn_1/3"] = {"ghn_checkpoint": str(ghn_steps // 3)}
    out["ghn_2/3"] = {"ghn_checkpoint": str(2 * ghn_steps // 3)}
    out["ghn_finetuned"] = {"finetune_ghn": True}
    return out


def _set(config, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = config
    for p in path:
        node = node[p]
    current = node[last]
    if isinstance(value, str) and not isinstance(current, str) and current is not None:
        value = type(current)(json.loads(value)) if not isinstance(current, bool) \
            else value.lower() in ("1", "true", "yes")
    node[last] = value


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="out/neuhmr", help="a finished default-job workdir")
    ap.add_argument("--out", default=None, help="default: <workdir>/ablation")
    ap.add_argument("--clips", type=int, default=0, help="first N clips only (0: all)")
    ap.add_argument("--steps", type=int, default=0, help="NeuHMR steps per clip (0: the job's)")
    ap.add_argument("--variants", default="all", help="comma-separated names, or 'all'")
    ap.add_argument("--set", nargs="*", default=[], help="optimize-config overrides k=v")
    args = ap.parse_args(argv)

    import smpl_jax
    from imphmr_jax.cli import InputError
    from neuhmr_jax import default_job, evaluation
    from neuhmr_jax.config import default_job_config
    from neuhmr_jax.data import inits as inits_lib
    from neuhmr_jax.data import synthetic_clips

    workdir = os.path.abspath(args.workdir)
    out = os.path.abspath(args.out or os.path.join(workdir, "ablation"))
    ghn_dir = os.path.join(workdir, "ghn")
    with open(os.path.join(ghn_dir, "config.json")) as f:
        ghn_steps = int(json.load(f)["train"]["num_steps"])
    clips = synthetic_clips.read_clips(os.path.join(workdir, "clips"))
    if args.clips:
        clips = clips[:args.clips]
    init = {}
    for c in clips:
        path = os.path.join(workdir, "init", c.name + ".npz")
        if not os.path.isfile(path):
            raise InputError(f"{path} does not exist: run the default job first "
                             f"(python -m neuhmr_jax.default_job --workdir {workdir})")
        init[c.name] = inits_lib.load_npz(path).check_num_frames(c.num_frames)
    body = smpl_jax.load(synthetic_clips.clips_info(os.path.join(workdir, "clips"))["body"])
    table = variants(ghn_steps)
    names = list(table) if args.variants == "all" else args.variants.split(",")
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(table)}")
    if "default" not in names:
        names = ["default"] + names
    ckpts = set(os.listdir(os.path.join(ghn_dir, "checkpoints")))

    rows = {"init": evaluation.pool(evaluation.evaluate_synthetic(clips, init, body))["metrics"]}
    seconds, skipped = {}, {}
    for name in names:
        config = default_job_config()
        config.unlock()
        config.optimize.unlock()
        config.optimize.optim.progress = False
        if args.steps:
            config.optimize.optim.steps = args.steps
        for kv in args.set:
            k, v = kv.split("=", 1)
            _set(config.optimize, k, v)
        for k, v in table[name].items():
            _set(config.optimize, k, v)
        step = str(config.optimize.ghn_checkpoint)
        if step != "latest" and step not in ckpts:
            skipped[name] = f"no GHN checkpoint at step {step} in {ghn_dir}/checkpoints"
            print(f"{name}: skipped ({skipped[name]})", flush=True)
            continue
        t = time.time()
        refined = default_job.neuhmr_refine(config, clips, init, ghn_dir,
                                            os.path.join(out, name.replace("/", "_of_")),
                                            overlay_clips=0)
        seconds[name] = time.time() - t
        rows[name] = evaluation.pool(evaluation.evaluate_synthetic(clips, refined,
                                                                   body))["metrics"]
        m = rows[name]
        print(f"{name}: MPJPE {m['mpjpe']:.1f} PA-MPJPE {m['pa_mpjpe']:.1f} PVE {m['pve']:.1f} "
              f"({seconds[name]:.0f} s)", flush=True)

    base, ref = rows["init"], rows.get("default")
    lines = ["| variant | MPJPE | PA-MPJPE | PVE | MPJPE vs init | MPJPE vs default |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, m in rows.items():
        vs_ref = "" if ref is None or name == "init" else f"{100 * (m['mpjpe'] / ref['mpjpe'] - 1):+.1f}%"
        lines.append(f"| {name} | {m['mpjpe']:.1f} | {m['pa_mpjpe']:.1f} | {m['pve']:.1f} | "
                     f"{100 * (m['mpjpe'] / base['mpjpe'] - 1):+.1f}% | {vs_ref} |")
    lines += [f"| {name} | skipped: {why} | | | | |" for name, why in skipped.items()]
    steps = args.steps or default_job_config().optimize.optim.steps
    text = (f"# NeuHMR ablations ({len(clips)} clips x {clips[0].num_frames} frames, {steps} "
            f"steps per clip, GHN {ghn_steps} steps; errors in mm)\n\n" + "\n".join(lines) + "\n")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    evaluation.write_json(os.path.join(out, "results.json"),
                          {"rows": rows, "seconds": seconds, "skipped": skipped,
                           "clips": [c.name for c in clips], "steps": steps,
                           "overrides": args.set})
    print("\n" + text)
    return {"rows": rows, "skipped": skipped}


if __name__ == "__main__":
    main()
