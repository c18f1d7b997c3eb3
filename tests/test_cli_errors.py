"""Failures a user meets on the command line are one line `error: ...` on stderr and exit status 1
(`--debug` / IMPHMR_DEBUG=1 show the traceback), `--help` exits 0, nothing is written for inputs
that are refused, a failed dataset build leaves no folders behind, `~` works in data paths, the
default job keeps its training time across re-runs, and loss curves skip empty series.

The command-line runs start together in one module fixture (each pays for importing jax; running
them at once keeps this file's time to about one of them on two cores)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from imphmr_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
SYNTHETIC_CONFIG = os.path.join(ROOT, "configs", "imphmr", "synthetic.py")


# ------------------------------------------------------------------------------------ helpers
def _write_lsp(root: str, n: int = 3, drop_key: str | None = None, corrupt: int | None = None):
    """A tiny LSP-format dataset root: lsp_dataset_test.npz and n JPEG images."""
    names = [f"imgs/im{i}.jpg" for i in range(n)]
    os.makedirs(os.path.join(root, "imgs"), exist_ok=True)
    for i, name in enumerate(names):
        arr = np.full((48, 40, 3), 30 * i + 20, np.uint8)
        Image.fromarray(arr).save(os.path.join(root, name))
    if corrupt is not None:
        with open(os.path.join(root, names[corrupt]), "wb") as f:
            f.write(b"not an image")
    rng = np.random.default_rng(0)
    ann = dict(imgname=np.array(names), center=rng.uniform(15, 25, (n, 2)),
               scale=rng.uniform(0.1, 0.2, n),
               part=np.concatenate([rng.uniform(0, 40, (n, 24, 2)), np.ones((n, 24, 1))], -1))
    if drop_key:
        del ann[drop_key]
    np.savez(os.path.join(root, "lsp_dataset_test.npz"), **ann)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS, env.get("PYTHONPATH", "")])
    env.pop(cli.DEBUG_ENV, None)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _one_line_error(result, *needles):
    """rc 1, stderr exactly one line `error: ...` containing every needle."""
    rc, out, err = result
    lines = err.strip().splitlines()
    assert rc == 1, (rc, err[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (returncode, stdout, stderr)} of every command-line run of this file, started at
    once; plus the paths they used under "paths"."""
    from imphmr_jax.data import builders

    tmp = tmp_path_factory.mktemp("cli")
    p = {k: str(tmp / k) for k in ("data", "lsp_ok", "lsp_nokey", "lsp_bad", "lsp_none")}
    _write_lsp(p["lsp_ok"])
    _write_lsp(p["lsp_nokey"], drop_key="center")
    _write_lsp(p["lsp_bad"], corrupt=1)
    os.makedirs(p["lsp_none"])
    builders.build("lsp", p["data"], manual_dir=p["lsp_ok"], progress=False)
    tiny = tmp / "tiny.py"
    tiny.write_text(textwrap.dedent(f"""
        from train_fixtures import tiny_config

        def get_config():
            c = tiny_config()
            c.data.data_dir = {p['data']!r}
            return c
        """))
    text = tmp / "notes.npz"
    text.write_text("these are not weights\n")
    for k in ("wd_missing_config", "wd_override", "wd_eval", "wd_weights", "wd_job",
              "build_nonpz", "build_nokey", "build_badimg", "build_ok"):
        p[k] = str(tmp / k)
    m = [sys.executable, "-m"]
    commands = {
        "train_help": m + ["imphmr_jax.train", "--help"],
        "eval_help": m + ["imphmr_jax.eval", "--help"],
        "job_help": m + ["imphmr_jax.default_job", "--help"],
        "build_help": m + ["imphmr_jax.data.build", "--help"],
        "body_help": m + ["smpl_jax.build_default", "--help"],
        "missing_config": m + ["imphmr_jax.train", "--config", str(tmp / "nope.py"),
                               "--workdir", p["wd_missing_config"], "--debug"],
        "override": m + ["imphmr_jax.train", "--config", SYNTHETIC_CONFIG, "--workdir",
                         p["wd_override"], "--config.train.batchsize=8"],
        "job_override": m + ["imphmr_jax.default_job", "--workdir", p["wd_job"],
                             "--config.trian.batch_size=8"],
        "eval_no_checkpoint": m + ["imphmr_jax.eval", "--config", str(tiny), "--workdir",
                                   p["wd_eval"], "--dataset", "lsp:test", "--protocol", "pw3d"],
        "eval_text_weights": m + ["imphmr_jax.eval", "--config", str(tiny), "--workdir",
                                  p["wd_weights"], "--weights", str(text)],
        "build_nonpz": m + ["imphmr_jax.data.build", "--dataset", "lsp", "--data_dir",
                            p["build_nonpz"], "--manual_dir", p["lsp_none"]],
        "build_nokey": m + ["imphmr_jax.data.build", "--dataset", "lsp", "--data_dir",
                            p["build_nokey"], "--manual_dir", p["lsp_nokey"]],
        "build_badimg": m + ["imphmr_jax.data.build", "--dataset", "lsp", "--data_dir",
                             p["build_badimg"], "--manual_dir", p["lsp_bad"], "--on_bad_image",
                             "error", "--no_progress"],
        "build_ok": m + ["imphmr_jax.data.build", "--dataset", "lsp", "--data_dir",
                         p["build_ok"], "--manual_dir", p["lsp_ok"]],
    }
    procs = {k: subprocess.Popen(c, cwd=str(tmp), env=_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
             for k, c in commands.items()}
    out = {}
    for k, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        out[k] = (proc.returncode, stdout, stderr)
    out["paths"] = p
    return out


# --------------------------------------------------------------------------- the command lines
@pytest.mark.parametrize("name", ["train_help", "eval_help", "job_help", "build_help",
                                  "body_help"])
def test_help_exits_0(runs, name):
    rc, out, err = runs[name]
    assert rc == 0, err[-2000:]
    assert "usage" in out.lower() or "flags:" in out, out[:500]


def test_missing_config_file_is_one_line_and_writes_nothing(runs):
    rc, _, err = runs["missing_config"]  # run with --debug: the traceback, then the one line
    assert rc == 1 and "Traceback (most recent call last)" in err, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: config file not found: ") and "nope.py" in line
    assert not os.path.exists(runs["paths"]["wd_missing_config"])


def test_misspelled_override_names_the_field_and_the_fix(runs):
    line = _one_line_error(runs["override"])
    assert line == "error: unknown config field train.batchsize; did you mean train.batch_size?"
    assert not os.path.exists(runs["paths"]["wd_override"])
    line = _one_line_error(runs["job_override"])  # DEFINE_config_dict applies overrides early
    assert line == "error: unknown config field trian; did you mean train?"


def test_eval_errors_are_one_line(runs):
    wd = runs["paths"]["wd_eval"]
    _one_line_error(runs["eval_no_checkpoint"], "no checkpoint in", wd)
    assert not os.path.exists(wd)
    line = _one_line_error(runs["eval_text_weights"], "notes.npz", "not an .npz file",
                           "converted weights")
    assert not os.path.exists(runs["paths"]["wd_weights"]), line


def test_build_errors_are_one_line_before_tfds_and_leave_nothing(runs):
    p = runs["paths"]
    _one_line_error(runs["build_nonpz"], "annotation file not found", "lsp_dataset_test.npz")
    _one_line_error(runs["build_nokey"], "lsp_dataset_test.npz", "missing required key 'center'")
    for name in ("build_nonpz", "build_nokey"):
        assert "Downloading and preparing" not in runs[name][1]  # refused before TFDS started
        assert not os.path.exists(p[name])
    _one_line_error(runs["build_badimg"], "im1.jpg", "cannot decode image")
    assert not os.path.exists(p["build_badimg"])  # TFDS's folders removed after the failure


def test_build_shows_one_progress_bar(runs):
    rc, out, err = runs["build_ok"]
    assert rc == 0, err[-2000:]
    assert '"written": 3' in out
    assert "lsp/test" in err  # the builder's own bar
    for tfds_bar in ("Generating splits", "Shuffling", "examples/s"):
        assert tfds_bar not in err, err
    assert "has no dataset_info.json" not in err


# ------------------------------------------------------------------------ the shared helper
def test_run_reports_user_errors_and_keeps_tracebacks_of_bugs(capsys, monkeypatch):
    monkeypatch.setenv(cli.DEBUG_ENV, "0")  # off; restored after --debug below sets it

    def main(argv):
        kind = argv[0]
        if kind == "user":
            raise cli.InputError("bad input:\n  file x.npz")
        if kind == "missing":
            open(os.path.join("/nonexistent-dir", "f.txt"))
        if kind == "keyerror":
            raise cli.UnknownNameError("unknown dataset 'x'; known: ['a']")
        if kind == "ctrl-c":
            raise KeyboardInterrupt
        if kind == "bug":
            raise TypeError("a programming error")
        return int(kind)

    for kind, status, text in [("user", 1, "error: bad input: file x.npz"),
                               ("missing", 1, "error: no such file or directory: "
                                              "/nonexistent-dir/f.txt"),
                               ("keyerror", 1, "error: unknown dataset 'x'; known: ['a']"),
                               ("ctrl-c", 130, "interrupted"), ("0", 0, ""), ("3", 3, "")]:
        with pytest.raises(SystemExit) as e:
            cli.run(main, [kind])
        assert e.value.code == status
        assert capsys.readouterr().err.strip() == text
    with pytest.raises(TypeError, match="programming error"):
        cli.run(main, ["bug"])
    with pytest.raises(SystemExit):
        cli.run(main, ["user", "--debug"])  # --debug is taken out of argv and shows the trace
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "error: bad input: file x.npz"
    assert not cli.is_user_error(ValueError("x")) and not cli.is_user_error(KeyError("x"))


def test_check_overrides_on_tables_and_values():
    from imphmr_jax.config import synthetic_config
    c = synthetic_config()
    assert cli.check_overrides("config", c, ["--config.train.batch_size=8",
                                             "--config.data.train.synthetic_humans.weight=1",
                                             "--other=1"]) is None
    err = cli.check_overrides("config", c, ["--config.data.train.coco_eft.weight=1"])
    assert str(err) == "unknown config field data.train.coco_eft; data.train has: synthetic_humans"
    err = cli.check_overrides("config", c, ["--config.train.batch_size.x=1"])
    assert "train.batch_size is a value" in str(err)


def test_in_process_clis_one_line(tmp_path, capsys, monkeypatch):
    """data.synthetic, data.build, convert and smpl_jax.build_default through their mains."""
    monkeypatch.setenv(cli.DEBUG_ENV, "0")
    from imphmr_jax import convert
    from imphmr_jax.data import build
    from imphmr_jax.data.synthetic import cli as synthetic_cli
    from smpl_jax import build_default

    with pytest.raises(SystemExit) as e:
        cli.run(synthetic_cli.main, ["--image-size", "4", "--figure", str(tmp_path / "f.png")])
    assert e.value.code == 1
    assert capsys.readouterr().err.startswith("error: --image-size 4: ")
    for argv, needle in [(["--dataset", "lspx", "--data_dir", str(tmp_path)],
                          "unknown dataset 'lspx'"),
                         (["--dataset", "lsp", "--data_dir", str(tmp_path), "--num_train", "3"],
                          "--num_train do(es) not apply"),
                         (["--dataset", "lsp", "--data_dir", str(tmp_path), "--manual_dir",
                           str(tmp_path / "nope")], "manual_dir"),
                         (["--dataset", "lsp", "--data_dir", str(tmp_path), "--manual_dir",
                           str(tmp_path), "--splits", "foo"], "unknown splits ['foo']")]:
        with pytest.raises(SystemExit) as e:
            cli.run(build.main, argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 1 and len(err) == 1 and needle in err[0], err
    text = tmp_path / "w.npz"
    text.write_text("hello")
    out = tmp_path / "o.npz"
    assert convert.main(["--torch", str(text), "--kind", "spin", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(text) in err[0] and "not an .npz" in err[0]
    np.savez(text, a=np.zeros(2))  # an npz, but not a state dict of this layout
    assert convert.main(["--torch", str(text), "--kind", "spin", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the" in err[0] and "--kind" in err[0] and not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert build_default._cli(["--out", str(blocker / "bodies")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(blocker / "bodies") in err[0]


# ---------------------------------------------------------------------- weights and datasets
def test_converted_weights_errors_name_the_file(tmp_path):
    from imphmr_jax import convert, pretrained

    z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    variables = {"params": {"backbone": {"conv1": {"kernel": z(3, 3, 3, 8)}},
                            "regressor": {"fc1": {"kernel": z(4, 2)}}},
                 "batch_stats": {"backbone": {}}}
    resnet = str(tmp_path / "resnet.npz")
    convert.save_npz(resnet, {"params": {"conv1": {"kernel": np.zeros((7, 7, 3, 64))}}})
    spin = str(tmp_path / "spin.npz")
    convert.save_npz(spin, {"backbone": {"params": {"conv1": {"kernel": np.zeros((3, 3, 3, 8))}}},
                            "regressor": {"params": {"fc1": {"kernel": np.zeros((4, 2))}}}})
    other = str(tmp_path / "other.npz")
    np.savez(other, a=np.zeros(2))
    text = str(tmp_path / "text.npz")
    with open(text, "w") as f:
        f.write("hello")
    cases = [("spin", resnet, "expected converted SPIN weights"),
             ("imagenet", spin, "converted SPIN weights (use kind 'spin')"),
             ("imagenet", other, "its top-level keys: a"),
             ("spin", text, "not an .npz file"),
             ("imagenet", str(tmp_path / "missing.npz"), "file not found"),
             ("imagenet", resnet, "shape mismatch at 'params/backbone/conv1/kernel'"),
             ("checkpoint", str(tmp_path / "no_run"), "no checkpoint in")]
    for kind, path, needle in cases:
        with pytest.raises(Exception) as e:
            pretrained.with_pretrained(variables, kind, path)
        assert cli.is_user_error(e.value), (kind, path, repr(e.value))
        msg = cli.error_message(e.value)
        assert needle in msg and os.path.basename(path) in msg, (kind, msg)
    merged = pretrained.with_pretrained(variables, "spin", spin)
    assert merged["params"]["regressor"]["fc1"]["kernel"].shape == (4, 2)
    with pytest.raises(cli.ConfigError, match="train.init.kind"):
        pretrained.with_pretrained(variables, "resnet", spin)
    with pytest.raises(cli.InputError, match="not converted weights"):
        pretrained.load_converted(other)


def test_data_paths_expand_home_and_variables(tmp_path, monkeypatch):
    from imphmr_jax import experiment
    from imphmr_jax.config import synthetic_config
    from imphmr_jax.data import builders

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IMPHMR_TEST_DATA", str(tmp_path / "home" / "tfds"))
    root = str(tmp_path / "lsp")
    _write_lsp(root)
    builders.build("lsp", "~/tfds", manual_dir=root, progress=False)
    assert os.path.isdir(tmp_path / "home" / "tfds" / "lsp")
    assert not os.path.exists("~")
    assert len(builders.load_source("lsp", "test", "~/tfds")) == 3
    assert len(builders.load_source("lsp", "test", "$IMPHMR_TEST_DATA")) == 3
    assert builders.build_metadata("lsp", "~/tfds")["counts"]["test"]["written"] == 3
    c = synthetic_config()
    c.data.data_dir = "~/tfds"
    assert experiment.data_dir(c) == str(tmp_path / "home" / "tfds")
    with pytest.raises(KeyError) as e:
        builders.load_source("lsp", "train", "~/tfds")
    assert cli.is_user_error(e.value) and "no split 'train'" in cli.error_message(e.value)


def test_eval_input_errors_come_before_the_model(tmp_path):
    """Unknown dataset / protocol / checkpoint names and an unbuilt dataset: user errors, raised
    before any model is built (the functions return at once) and with nothing written."""
    from imphmr_jax import eval as eval_lib
    from train_fixtures import tiny_config

    c = tiny_config()
    c.data.data_dir = str(tmp_path / "data")
    wd = str(tmp_path / "run")
    for kw, needle in [(dict(dataset="nosuch:test"), "unknown dataset 'nosuch'"),
                       (dict(dataset="pw3d:test"), "python -m imphmr_jax.data.build"),
                       (dict(dataset=":test"), "NAME[/builder_config][:split]"),
                       (dict(protocol="pw3dx"), "unknown protocol 'pw3dx'"),
                       (dict(which="last"), "'best', 'latest' or a step number")]:
        with pytest.raises(Exception) as e:
            eval_lib.evaluate_run(c, wd, **kw)
        assert cli.is_user_error(e.value), repr(e.value)
        msg = cli.error_message(e.value)
        assert needle in msg and "\n" not in msg, msg
    assert not os.path.exists(wd)


# ------------------------------------------------------------------- default job and figures
def test_default_job_keeps_the_training_time_of_a_finished_run(tmp_path):
    from imphmr_jax import default_job

    d = str(tmp_path)
    assert default_job.training_time(d, 1980.0, {"step": 3000, "start_step": 0}) == 1980.0
    # a re-run that only resumed the finished training and evaluated again
    assert default_job.training_time(d, 36.0, {"step": 3000, "start_step": 3000}) == 1980.0
    stored = json.load(open(os.path.join(d, default_job.TRAIN_TIME_FILE)))
    assert stored == {"train_seconds": 1980.0, "steps": 3000}
    # a run that trained more steps (num_steps raised) adds its time
    assert default_job.training_time(d, 100.0, {"step": 3500, "start_step": 3000}) == 2080.0


def test_loss_curves_skip_constant_zero_and_nan_series(tmp_path):
    from imphmr_jax import figures

    metrics = tmp_path / "metrics.jsonl"
    with open(metrics, "w") as f:
        for step in range(0, 100, 10):
            f.write(json.dumps({"step": step, "loss": 1.0 / (step + 1), "train/skipped": 0.0,
                                "train/spikes_total": 0, "lr": 1e-3,
                                "eval/esv": float("nan")}) + "\n")
    path = str(tmp_path / "curves.png")
    keys = figures.loss_curves(str(metrics), path)
    assert keys == ["loss", "lr"]
    img = np.asarray(Image.open(path).convert("L"))
    assert img.shape == (335, 800)  # two 4x3-inch panels and a caption line
    assert (img[-30:] < 128).any()  # the caption naming the skipped series
    # explicit keys are drawn as asked; an all-zero file still gets its panels
    assert figures.loss_curves(str(metrics), path, keys=["train/skipped"]) == ["train/skipped"]
    zeros = tmp_path / "zeros.jsonl"
    zeros.write_text('{"step": 0, "a": 0}\n{"step": 1, "a": 0}\n')
    assert figures.loss_curves(str(zeros), path) == ["a"]
