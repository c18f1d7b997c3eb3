"""Evaluation: `python -m imphmr_jax.eval --config configs/imphmr/<name>.py --workdir DIR`.

Evaluates a trained run (its best checkpoint by PA-MPJPE, or `--checkpoint latest|STEP`) or weights
converted from PyTorch (`--weights spin.npz` from `python -m imphmr_jax.convert --kind spin`) on the
datasets of `config.eval.datasets` or `--dataset NAME[/builder_config][:split]`, with the protocols
of docs/evaluation.md#protocols (`imphmr_jax.evaluation.PROTOCOLS`; `--protocol` overrides). Writes,
per dataset, to DIR/eval/<protocol>/: summary.json, per_sample.jsonl, mesh overlays, the multi-view
imagination panel (φ = 0°, 90°, 180°, 270°), and ESV (docs/evaluation.md#esv) over `--esv_samples`
images for the variants that render views. The ground-truth body choice (neutral vs gendered,
`--gendered_gt`) is printed and stored in the summary.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from imphmr_jax import experiment, metrics
from imphmr_jax.cli import InputError, UnknownNameError, expand_path
from imphmr_jax.evaluation import PROTOCOLS
from imphmr_jax.models.build import build_model
from imphmr_jax.pretrained import load_converted, variables_from_converted
from imphmr_jax.train import imagination_panels, make_predict_fn, uses_views
from imphmr_jax.training import sharding, startup
from imphmr_jax.training.checkpoint import load_variables
from imphmr_jax.training.writer import scalar_summary


def esv_summary(model, variables, source, config, num_samples: int) -> dict:
    """ESV over the first `num_samples` images (360 views each)."""
    n = min(num_samples, len(source))
    it = experiment.eval_iterator(config, source, max_examples=n, batch_size=n)
    batch = next(iter(it))
    images = jnp.asarray(batch["image"][:n])
    fn = jax.jit(lambda x, p: model.apply(variables, x, p, False)["betas"])
    values = np.asarray(metrics.esv_of_model(fn, images, chunk_size=30))
    return {"esv": float(values.mean()), "esv_samples": int(n)}


def evaluate_run(config, workdir: str, *, dataset: Optional[str] = None,
                 weights: Optional[str] = None, which: str = "best",
                 protocol: Optional[str] = None, max_examples: Optional[int] = None,
                 esv_samples: int = 8, max_figures: Optional[int] = None) -> dict:
    """Evaluate and write results; returns {protocol: summary}."""
    workdir = os.path.abspath(expand_path(workdir))
    # Every input is checked before the model is built or anything is written: the weights file,
    # the datasets and protocols, then the checkpoint.
    tree = None
    if weights:
        weights = expand_path(weights)
        tree = load_converted(weights)
    if not weights and str(which) not in ("best", "latest") and not str(which).isdigit():
        raise InputError(f"checkpoint must be 'best', 'latest' or a step number, got {which!r}")
    if protocol and protocol not in PROTOCOLS:
        raise UnknownNameError(f"unknown protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
    entries = [experiment.parse_dataset(dataset)] if dataset else experiment.eval_entries(config)
    sources = [(entry, experiment.open_source(config, entry, build_if_missing=False),
                protocol or experiment.protocol_name(config, entry.name)) for entry in entries]
    if weights:
        model, variables = variables_from_converted(config, weights, tree=tree)
        source_desc = f"converted weights {weights}"
    else:
        model = build_model(config.model)
        variables = load_variables(workdir, which)
        source_desc = f"checkpoint '{which}' of {workdir}"
    mesh = sharding.make_mesh()
    predict = make_predict_fn(model, mesh)
    bodies = experiment.eval_bodies(config)
    body = bodies["neutral"]
    results = {}
    for entry, src, proto in sources:
        out_dir = os.path.join(workdir, "eval", proto)
        gt = "gendered" if config.eval.gendered_gt else "neutral"
        print(f"evaluating {source_desc} on {entry.name}:{entry.split} ({len(src)} samples), "
              f"protocol {proto}, {gt} ground-truth bodies")
        summary = dict(experiment.evaluate_split(
            config, predict, variables, src, proto, bodies, mesh, out_dir=out_dir,
            max_examples=config.eval.max_examples if max_examples is None else max_examples,
            max_figures=config.eval.max_figures if max_figures is None else max_figures,
            progress=True))
        if uses_views(config) and esv_samples > 0:
            summary.update(esv_summary(model, variables, src, config, esv_samples))
            imagination_panels(config, model, variables, src, out_dir, body)
        if jax.process_index() == 0:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "summary.json"), "w") as f:
                json.dump(_jsonable(summary), f, indent=2)
            print(json.dumps(scalar_summary(summary), indent=2))
        results[proto] = summary
    return results


def _jsonable(d):
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        out[k] = v
    return out


def main(argv):
    del argv
    startup.quiet_logs()
    from absl import flags
    f = flags.FLAGS
    evaluate_run(f.config, f.workdir, dataset=f.dataset or None, weights=f.weights or None,
                 which=f.checkpoint, protocol=f.protocol or None,
                 max_examples=f.max_examples if f.max_examples >= 0 else None,
                 esv_samples=f.esv_samples)


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
    flags.DEFINE_string("workdir", None, "training workdir (checkpoints) and output directory")
    flags.DEFINE_string("dataset", "", "NAME[/builder_config][:split]; default config.eval.datasets")
    flags.DEFINE_string("weights", "", "converted .npz weights instead of a checkpoint")
    flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number")
    flags.DEFINE_string("protocol", "", "override the dataset's evaluation protocol")
    flags.DEFINE_integer("max_examples", -1, "evaluate only the first N samples (-1: config)")
    flags.DEFINE_integer("esv_samples", 8, "images for ESV (0 = skip)")
    from imphmr_jax import cli
    cli.run_absl(main, required=("config", "workdir"))
