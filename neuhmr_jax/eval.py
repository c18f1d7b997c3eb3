"""Evaluate per-frame SMPL predictions of videos: `python -m neuhmr_jax.eval`.

    python -m neuhmr_jax.eval --dataset synthetic --data CLIPS --predictions init=INITS \\
        --predictions neuhmr=RUNS --out OUT
    python -m neuhmr_jax.eval --dataset emdb --data EMDB_ROOT --predictions PRED --out OUT \\
        --body SMPL_NEUTRAL.pkl --gt_body male=SMPL_MALE.pkl,female=SMPL_FEMALE.pkl
    python -m neuhmr_jax.eval --dataset 3dpw --data 3DPW_ROOT --predictions PRED --out OUT \\
        --body SMPL_NEUTRAL.pkl [--j_regressor J_regressor_h36m.npy]

The protocols are `neuhmr_jax.evaluation`'s (docs/video_evaluation.md#command-line): EMDB's
official one (EMDB1 sequences by default), the 3DPW video protocol (test split by default), and
the synthetic video split of `neuhmr_jax.data.synthetic_clips` (ground truth and prediction posed
with the clips' own body, which clips.json names).

`--predictions [NAME=]PATH`, repeated to compare methods side by side. PATH is either
  * a folder holding, for every evaluated sequence (EMDB: the pickle's 'name', e.g.
    P0_09_outdoor_walk, or P0/09_outdoor_walk; 3DPW: '<sequence>_<person>'; synthetic: the clip
    name), `<sequence>.npz` (an initialisation .npz, `inits.load_npz`), `<sequence>/refined.npz`
    (a `python -m neuhmr_jax.optimize` workdir) or `<sequence>/` with HybrIK's per-frame pickles;
  * or one .npz with keys '<sequence>/poses', '<sequence>/betas' (and optionally
    '<sequence>/transl') per sequence (`save_predictions`).
A prediction holds every frame of its sequence (EMDB and 3DPW: or only the evaluated frames). A
missing sequence, a wrong frame count or an unreadable file is a one-line error naming the file;
everything is read and checked before anything is evaluated or written.

Writes to --out: `<method>/` summary.json, per_frame.json, table.md (`evaluation.write_results`)
per method; results.md (the methods compared: pooled, per motion family, per joint, per
sequence), results.json (the same numbers) and errors.png (per-joint MPJPE bars, or the pooled
errors, per method; per-frame MPJPE curves per sequence).
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from imphmr_jax.cli import InputError, UserError, error_message, expand_path

DATASETS = ("emdb", "3dpw", "synthetic")
DEFAULT_SPLITS = {"emdb": "emdb1", "3dpw": "test"}
GENDERS = ("female", "male", "neutral")
_METHOD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
SMPL_HINT = ("SMPL's model files are licensed and not part of this project: register at "
             "https://smpl.is.tue.mpg.de, download the SMPL python model files and pass "
             "--body .../SMPL_NEUTRAL.pkl (the predictions' body) and --gt_body "
             "male=.../SMPL_MALE.pkl,female=.../SMPL_FEMALE.pkl,neutral=.../SMPL_NEUTRAL.pkl "
             "(the subjects' ground truth); --body default-small runs the protocol with the open "
             "body instead (numbers not comparable with papers)")


@dataclasses.dataclass
class Target:
    """One evaluated sequence: an EMDB sequence, a 3DPW track (`person`) or a synthetic clip.

    aliases: other names its prediction may be stored under; counts: the frame counts a
    prediction may hold (every frame, the evaluated frames); item: the dataset's object."""

    name: str
    aliases: tuple
    counts: tuple
    item: Any
    person: int = 0


# ------------------------------------------------------------------------------------- inputs
def parse_methods(specs: Sequence[str]) -> dict:
    """['NAME=PATH' or 'PATH', ...] -> {name: path} (a bare PATH is named after its file)."""
    methods: dict = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or os.sep in name:
            path = spec
            name = os.path.basename(os.path.normpath(path))
            name = name[:-4] if name.lower().endswith(".npz") else name
        if not path:
            raise InputError(f"--predictions {spec!r}: give NAME=PATH or PATH")
        if not _METHOD.match(name):
            raise InputError(f"--predictions {spec!r}: method name {name!r} must be letters, "
                             "digits and _ . + - (it names a folder of --out)")
        if name in methods:
            raise InputError(f"--predictions: two methods named {name!r}; name them with "
                             "NAME=PATH")
        methods[name] = path
    if not methods:
        raise InputError("--predictions is required: [NAME=]PATH, repeated to compare methods")
    return methods


def load_body(value: str, flag: str = "--body"):
    """A body model ('default', 'default-small' or an SMPL .pkl / .npz path) for `flag`."""
    import smpl_jax

    path = expand_path(value)
    try:
        return smpl_jax.load(path)
    except FileNotFoundError:
        raise InputError(f"{flag} {value}: SMPL model file not found ({path}). {SMPL_HINT}"
                         ) from None
    except ValueError as e:
        raise InputError(f"{flag} {value}: {error_message(e)}") from None


def parse_gt_bodies(value: Optional[str], cache: dict):
    """--gt_body: None, one body for every subject, or 'GENDER=FILE,...' -> {gender: body}.
    `cache` maps file -> loaded body (shared with --body)."""
    if not value:
        return None

    def body(path):
        if path not in cache:
            cache[path] = load_body(path, "--gt_body")
        return cache[path]

    if "=" not in value:
        return body(value)
    out = {}
    for part in value.split(","):
        gender, sep, path = part.partition("=")
        gender = gender.strip().lower()
        if not sep or gender not in GENDERS or not path.strip():
            raise InputError(f"--gt_body {value!r}: give one body file, or GENDER=FILE pairs "
                             "separated by commas with GENDER one of female, male, neutral "
                             "(e.g. male=SMPL_MALE.pkl,female=SMPL_FEMALE.pkl)")
        out[gender] = body(path.strip())
    return out


def find_targets(dataset: str, data: str, split: Optional[str],
                 sequences: Optional[Sequence[str]] = None) -> list:
    """The sequences (3DPW: tracks) the protocol evaluates, optionally only those named."""
    if dataset == "synthetic":
        from neuhmr_jax.data.synthetic_clips import read_clips
        targets = [Target(c.name, (), (c.num_frames,), c) for c in read_clips(data)]
    elif dataset == "emdb":
        from neuhmr_jax.data import emdb
        targets = [Target(s.name, (f"{s.subject}/{s.sequence_id}",),
                          (s.n_frames, int(s.good_frames.size)), s)
                   for s in emdb.find_sequences(expand_path(data), split)]
    else:
        from neuhmr_jax.data import threedpw
        targets = []
        for s in threedpw.find_sequences(expand_path(data), split):
            for p, who in enumerate(s.people):
                if who.valid_frames.size:  # as evaluate_threedpw: tracks without valid frames
                    targets.append(Target(s.track_name(p), (), (s.n_frames,
                                                                 int(who.valid_frames.size)),
                                          s, p))
    if sequences:
        known = {t.name for t in targets}
        unknown = [s for s in sequences if s not in known]
        if unknown:
            raise InputError(f"--sequences {unknown} not in {data} ({dataset}"
                             f"{', ' + split if split else ''}); it has {sorted(known)}")
        targets = [t for t in targets if t.name in set(sequences)]
    if not targets:
        raise InputError(f"{data}: no sequence to evaluate ({dataset}"
                         f"{', split ' + split if split else ''})")
    return targets


# ------------------------------------------------------------------------------------- predictions
def save_predictions(path, predictions: Mapping[str, Any]) -> str:
    """Write {sequence: Init} as one .npz ('<sequence>/poses', '/betas', '/transl')."""
    path = expand_path(os.fspath(path))
    arrays = {}
    for name, init in predictions.items():
        arrays.update({f"{name}/poses": np.asarray(init.poses, np.float32),
                       f"{name}/betas": np.asarray(init.betas, np.float32),
                       f"{name}/transl": np.asarray(init.transl, np.float32)})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, **arrays)
    return path if path.endswith(".npz") else path + ".npz"


def _from_folder(root: str, target: Target, body, method: str):
    from neuhmr_jax.data import inits

    tried = []
    for key in (target.name,) + target.aliases:
        npz = os.path.join(root, key + ".npz")
        workdir = os.path.join(root, key)
        refined = os.path.join(workdir, "refined.npz")
        if os.path.isfile(npz):
            return inits.load_npz(npz)
        if os.path.isfile(refined):
            return inits.load_npz(refined)
        if os.path.isdir(workdir):
            if any(n.endswith(".pkl") for n in os.listdir(workdir)) \
                    or os.path.isdir(os.path.join(workdir, "hybrIK-out")):
                return inits.load_hybrik(workdir, body)
            raise InputError(f"--predictions {method}: {workdir} holds neither refined.npz (a "
                             "NeuHMR workdir) nor HybrIK's per-frame pickles")
        tried += [npz, refined]
    raise InputError(f"--predictions {method}: no prediction for sequence {target.name}: "
                     f"{' nor '.join(tried)} exists (a predictions folder holds <sequence>.npz, "
                     "<sequence>/refined.npz or <sequence>/ with HybrIK pickles per sequence)")


def _from_bundle(path: str, targets: Sequence[Target]) -> dict:
    from neuhmr_jax.data import inits

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:  # noqa: BLE001 - any reading failure names the file
        raise InputError(f"{path} is not a readable .npz file ({type(e).__name__}: "
                         f"{error_message(e)})") from None
    if not any("/" in k for k in arrays):
        if len(targets) == 1:
            return {targets[0].name: inits.load_npz(path)}
        raise InputError(f"{path} holds one initialisation (keys {sorted(arrays)}) but "
                         f"{len(targets)} sequences are evaluated: give a folder with "
                         "<sequence>.npz per sequence, or one .npz with '<sequence>/poses' and "
                         "'<sequence>/betas' keys")
    out = {}
    for t in targets:
        key = next((k for k in (t.name,) + t.aliases if f"{k}/poses" in arrays), None)
        if key is None:
            held = sorted({k.rsplit("/", 1)[0] for k in arrays if k.endswith("/poses")})
            raise InputError(f"{path}: no prediction for sequence {t.name} (no key "
                             f"'{t.name}/poses'; it holds {held[:10]}"
                             f"{' ...' if len(held) > 10 else ''})")
        if f"{key}/betas" not in arrays:
            raise InputError(f"{path}: missing key '{key}/betas'")
        poses = arrays[f"{key}/poses"]
        where = f"{path} ['{key}/poses']"
        if poses.ndim == 4:
            poses = inits.rotmats_to_axis_angle(poses, where)
        elif poses.ndim == 2 and poses.shape[1] == 72:
            poses = poses.reshape(-1, 24, 3)
        transl = arrays.get(f"{key}/transl", np.zeros((poses.shape[0], 3)))  # no metric uses it
        out[t.name] = inits.Init(poses, arrays[f"{key}/betas"], transl, source=where)
    return out


def load_predictions(spec: str, targets: Sequence[Target], body, method: str) -> dict:
    """{sequence: Init} of one method for every target, frame counts checked."""
    path = expand_path(spec)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--predictions {method}: {path} does not exist")
    if os.path.isdir(path):
        preds = {t.name: _from_folder(path, t, body, method) for t in targets}
    elif path.lower().endswith(".npz"):
        preds = _from_bundle(path, targets)
    else:
        raise InputError(f"--predictions {method}: {path} is neither a folder of per-sequence "
                         "predictions nor an .npz")
    for t in targets:
        n = preds[t.name].num_frames
        if n not in t.counts:
            what = (f"{t.counts[0]} frames" if len(set(t.counts)) == 1 else
                    f"{t.counts[0]} frames, {t.counts[1]} of them evaluated (a prediction holds "
                    "either)")
            raise InputError(f"{preds[t.name].source} holds {n} frames but sequence {t.name} "
                             f"has {what}")
    return preds


# ------------------------------------------------------------------------------------- evaluation
def _evaluate(dataset: str, targets, preds: dict, body, gt_bodies, j_regressor) -> dict:
    from neuhmr_jax import evaluation as ev

    if dataset == "synthetic":
        return ev.evaluate_synthetic([t.item for t in targets], preds, body)
    if dataset == "emdb":
        return {t.name: ev.evaluate_sequence(preds[t.name].poses, preds[t.name].betas, t.item,
                                             body, gt_bodies) for t in targets}
    return {t.name: ev.evaluate_threedpw_track(preds[t.name].poses, preds[t.name].betas, t.item,
                                               t.person, body, gt_bodies,
                                               j_regressor=j_regressor) for t in targets}


def _bodies(dataset: str, targets, body: Optional[str], gt_body: Optional[str], data: str):
    """(prediction body, ground-truth bodies, labels) for the dataset, checked up front."""
    cache: dict = {}
    if dataset == "synthetic":
        from neuhmr_jax.data.synthetic_clips import clips_info
        clip_body = clips_info(data).get("body") or "default-small"
        if gt_body:
            raise InputError("--gt_body is not used with --dataset synthetic: the ground truth "
                             f"is posed with the clips' own body ({clip_body})")
        if body and body != clip_body:
            raise InputError(f"--body {body}: the synthetic clips in {data} were made with body "
                             f"{clip_body!r} (clips.json), which poses both sides; omit --body")
        return load_body(clip_body), None, {"body": clip_body, "gt_body": clip_body}
    if not body:
        raise InputError(f"--dataset {dataset} needs --body: {SMPL_HINT}")
    cache[body] = pred_body = load_body(body)
    gt_bodies = parse_gt_bodies(gt_body, cache)
    if isinstance(gt_bodies, Mapping):
        genders = {}
        for t in targets:
            g = t.item.gender if dataset == "emdb" else t.item.people[t.person].gender
            genders.setdefault(g, []).append(t.name)
        missing = {g: names for g, names in genders.items() if g not in gt_bodies}
        if missing:
            g, names = next(iter(missing.items()))
            raise InputError(f"--gt_body has no body for gender {g!r} (sequences "
                             f"{names[:5]}{' ...' if len(names) > 5 else ''}): add "
                             f"{g}=.../SMPL_{g.upper()}.pkl to it")
    for b in (gt_bodies.values() if isinstance(gt_bodies, Mapping)
              else [] if gt_bodies is None else [gt_bodies]):
        if b.num_vertices != pred_body.num_vertices:
            raise InputError(f"--gt_body has {b.num_vertices} vertices but --body "
                             f"{pred_body.num_vertices}: both must share one mesh topology")
    return pred_body, gt_bodies, {"body": body, "gt_body": gt_body or body}


def evaluate_command(*, dataset: str, data: str, predictions: Sequence[str], out: str,
                     split: Optional[str] = None, body: Optional[str] = None,
                     gt_body: Optional[str] = None, j_regressor: Optional[str] = None,
                     sequences: Optional[Sequence[str]] = None, figures: bool = True,
                     verbose: bool = False) -> dict:
    """The command line's work (module doc); returns the content of results.json, plus 'files'
    ({what: path}) and 'table' (the pooled comparison as Markdown)."""
    from neuhmr_jax import evaluation as ev

    if dataset not in DATASETS:
        raise InputError(f"--dataset {dataset!r}: one of {list(DATASETS)}")
    if dataset == "synthetic" and split:
        raise InputError("--split is not used with --dataset synthetic (a clips folder is one "
                         "split)")
    if j_regressor and dataset != "3dpw":
        raise InputError("--j_regressor is used with --dataset 3dpw only")
    split = split or DEFAULT_SPLITS.get(dataset)
    methods = parse_methods(predictions)
    data, out = expand_path(data), expand_path(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out} exists and is not a folder")
    targets = find_targets(dataset, data, split, sequences)
    pred_body, gt_bodies, labels = _bodies(dataset, targets, body, gt_body, data)
    reg = None
    if j_regressor:
        try:
            reg = ev.load_j_regressor(expand_path(j_regressor), pred_body.num_vertices)
        except (ValueError, OSError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise InputError(f"--j_regressor {j_regressor}: {error_message(e)}") from None
    preds = {m: load_predictions(p, targets, pred_body, m) for m, p in methods.items()}

    results, pooled, by_family, files = {}, {}, {}, {}
    for m in methods:
        results[m] = _evaluate(dataset, targets, preds[m], pred_body, gt_bodies, reg)
        pooled[m] = ev.pool(results[m])
        if dataset == "synthetic":
            by_family[m] = ev.pool_by(results[m], "family")
        meta = {"method": m, "predictions": expand_path(methods[m]), "dataset": dataset,
                "data": data, "split": split, **labels}
        written = ev.write_results(os.path.join(out, m), results[m], pooled[m], meta)
        files[f"{m}/summary.json"] = written["summary"]
        if verbose:
            print(f"{m}: MPJPE {pooled[m]['metrics']['mpjpe']:.1f} mm, PA-MPJPE "
                  f"{pooled[m]['metrics']['pa_mpjpe']:.1f} mm over {pooled[m]['num_frames']} "
                  f"frames of {pooled[m]['num_sequences']} sequences")
    summary = {"dataset": dataset, "data": data, "split": split, **labels,
               "num_sequences": len(targets),
               "methods": {m: {"predictions": expand_path(methods[m]), "pooled": pooled[m],
                               **({"by_family": by_family[m]} if by_family else {})}
                           for m in methods}}
    split_text = f", split {split}" if split else ""
    table, text = ev.comparison_markdown(pooled, by_family, title=f"{dataset} evaluation", intro=[
        f"Data: `{data}`{split_text}. Bodies: predictions `{labels['body']}`, ground truth "
        f"`{labels['gt_body']}`.", "",
        "Methods: " + ", ".join(f"{m} (`{expand_path(p)}`)" for m, p in methods.items()) + "."])
    files["results.json"] = ev.write_json(os.path.join(out, "results.json"), summary)
    files["results.md"] = ev.write_text(os.path.join(out, "results.md"), text)
    if figures:
        files["errors.png"] = ev.plot_errors(os.path.join(out, "errors.png"), results, pooled)
    return {**summary, "files": files, "table": table}


# ------------------------------------------------------------------------------------- CLI
def main(argv):
    from absl import flags
    from imphmr_jax.training import startup

    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
    startup.quiet_logs()
    f = flags.FLAGS
    summary = evaluate_command(dataset=f.dataset, data=f.data, predictions=f.predictions,
                               out=f.out, split=f.split, body=f.body, gt_body=f.gt_body,
                               j_regressor=f.j_regressor, sequences=f.sequences,
                               figures=f.figures, verbose=True)
    print(summary["table"])
    for name, path in summary["files"].items():
        print(f"{name}: {path}")
    return 0


def _define_flags():
    from absl import flags
    flags.DEFINE_enum("dataset", None, list(DATASETS), "the protocol and data layout")
    flags.DEFINE_string("data", None, "EMDB root (P0 ... P9), 3DPW root (sequenceFiles/) or a "
                        "synthetic clips folder (clips.json)")
    flags.DEFINE_multi_string("predictions", None, "[NAME=]PATH: a folder with <sequence>.npz, "
                              "<sequence>/refined.npz or HybrIK <sequence>/ per sequence, or one "
                              ".npz with '<sequence>/poses' keys; repeat to compare methods")
    flags.DEFINE_string("out", None, "output folder")
    flags.DEFINE_string("split", None, "EMDB: emdb1 (default), emdb2, all; 3DPW: test "
                        "(default), validation, train; not used with synthetic")
    flags.DEFINE_string("body", None, "the predictions' body: an SMPL .pkl / .npz, 'default' or "
                        "'default-small' (EMDB, 3DPW; synthetic: the clips' body)")
    flags.DEFINE_string("gt_body", None, "ground-truth body: one file, or GENDER=FILE,... "
                        "(female, male, neutral); default --body for every subject")
    flags.DEFINE_string("j_regressor", None, "3DPW: SPIN's J_regressor_h36m.npy (14 LSP joints)")
    flags.DEFINE_list("sequences", None, "evaluate only these sequences (names, comma-separated)")
    flags.DEFINE_bool("figures", True, "write errors.png")


if __name__ == "__main__":
    from imphmr_jax import cli
    cli.run_absl(main, required=("dataset", "data", "predictions", "out"),
                 define_flags=_define_flags)
