"""Evaluate a trained Φ^GHN: `python -m neuhmr_jax.eval_ghn --workdir DIR [--split test]`.

Renders held-out targets of the run's dataset (people never seen in training, from n reference
images of the same person in other frames) in full and writes DIR/eval_<split>/summary.json,
per_target.jsonl and one figure per target (references | target | rendering | occupancy W |
depth): PSNR and SSIM on the person's pixels, the PSNR of painting the person's mean colour in
the ground-truth mask (the trivial baseline), and the IoU of W > 0.5 with the mask
(docs/neuhmr.md#evaluation).
"""
from __future__ import annotations

import json
import os

from imphmr_jax.training import startup


def evaluate_run(workdir: str, *, split: str = "test", which: str = "latest",
                 max_targets: int = 0, max_figures: int = -1, progress: bool = True) -> dict:
    """Evaluate the run in `workdir` on `split`; returns the summary (metrics, per_target)."""
    from neuhmr_jax.ghn import data as ghn_data
    from neuhmr_jax.ghn import evaluation as ghn_eval
    from neuhmr_jax.train_ghn import load_ghn

    ghn, variables, config = load_ghn(workdir, which)
    people = ghn_data.load_split(config, split)
    out_dir = os.path.join(os.path.abspath(os.path.expanduser(workdir)), f"eval_{split}")
    summary = ghn_eval.evaluate(
        ghn, variables, people, config, max_targets=max_targets or config.eval.max_targets,
        out_dir=out_dir, max_figures=config.eval.max_figures if max_figures < 0 else max_figures,
        progress=progress)
    summary["out_dir"] = out_dir
    return summary


def main(argv):
    del argv
    startup.quiet_logs()
    from absl import flags
    f = flags.FLAGS
    summary = evaluate_run(f.workdir, split=f.split, which=f.checkpoint,
                           max_targets=f.max_targets, max_figures=f.max_figures)
    print(json.dumps(summary["metrics"], indent=2))
    print(f"figures and per-target results: {summary['out_dir']}")


if __name__ == "__main__":
    from absl import flags
    flags.DEFINE_string("workdir", None, "a GHN training run (python -m neuhmr_jax.train_ghn)")
    flags.DEFINE_string("split", "test", "dataset split to render (held-out people: test)")
    flags.DEFINE_string("checkpoint", "latest", "'latest' or a step number")
    flags.DEFINE_integer("max_targets", 0, "targets to render (0: config.eval.max_targets)")
    flags.DEFINE_integer("max_figures", -1, "figures to write (-1: config.eval.max_figures)")
    from imphmr_jax import cli
    cli.run_absl(main, required=("workdir",))
