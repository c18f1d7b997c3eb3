"""Shared command-line plumbing: a user's mistake is one line on stderr, never a traceback.

Every entry point (`train`, `eval`, `default_job`, `convert`, `data.build`, `data.synthetic`,
`demo`) runs its `main` through `run` (argparse-style `main(argv) -> int`) or `run_absl` (absl
apps with config flags). Errors meant for the user -- a missing input file, a misspelled config
field, a checkpoint of another model, an annotation file without the key a builder reads -- print
`error: <message>` to stderr and exit with status 1. Anything else is a programming error and
keeps its full traceback. `--debug` on the command line (removed before the CLI's own parser sees
it) or `IMPHMR_DEBUG=1` in the environment shows the traceback of user errors too.

What counts as a user error (`is_user_error`):
  * `UserError` and its subclasses (`ConfigError`, `InputError`, `UnknownNameError`): raise
    these for input checks;
  * the project's own user-facing exception types listed in `_USER_ERROR_TYPES` by qualified name
    (checked through the MRO, so this module imports none of them and stays light);
  * `FileNotFoundError` (a missing input: the project's own raise it with the path and what to
    do, the OS's carry `e.filename`), and `NotADirectoryError` / `IsADirectoryError` /
    `PermissionError` that name a path (`e.filename`);
  * `KeyboardInterrupt` prints `interrupted` and exits with status 130.
Plain `ValueError`, `KeyError`, `TypeError` ... are not user errors: input checks raise
`InputError` (a `ValueError`, so existing `except ValueError` keeps working).
"""
from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import Callable, NoReturn, Optional, Sequence

DEBUG_FLAG = "--debug"
DEBUG_ENV = "IMPHMR_DEBUG"


class UserError(Exception):
    """An error caused by the user's input (files, flags, config): shown as one line."""


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used (missing file, unknown field, bad value)."""


class InputError(UserError, ValueError):
    """An input file or argument that is not what the command expects."""


class UnknownNameError(UserError, KeyError):
    """A name the user gave (dataset, split, protocol) that does not exist; a KeyError."""

    def __str__(self):  # KeyError would quote the message and escape its newlines
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


# The project's exception classes that are meant for the user, by "module.QualName". They may
# predate `UserError`; listing them here keeps this module free of heavy imports.
_USER_ERROR_TYPES = frozenset({
    "imphmr_jax.training.checkpoint.CheckpointMismatchError",
    "imphmr_jax.training.state.NonFiniteError",
    "imphmr_jax.data.builders.base.BadImageError",
    "imphmr_jax.data.builders.real.AnnotationError",
})

_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def expand_path(path):
    """A path the user typed, with `~` and $VARS expanded (None and "" stay as they are). Every
    data_dir / workdir / input file that enters the project from a user goes through this."""
    if path is None:
        return None
    path = os.fspath(path)
    return os.path.expandvars(os.path.expanduser(path)) if path else path


def debug_enabled(argv: Optional[Sequence[str]] = None) -> bool:
    """True when tracebacks were asked for (`--debug` in argv or IMPHMR_DEBUG set, not 0)."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    if env not in ("", "0", "false", "no"):
        return True
    return argv is not None and DEBUG_FLAG in argv


def strip_debug(argv: Sequence[str]) -> list:
    """argv without `--debug` (so argparse / absl never see it). When it was there, IMPHMR_DEBUG
    is set, so that code handling its own errors (`debug_enabled()`) re-raises them too."""
    if DEBUG_FLAG in argv:
        os.environ[DEBUG_ENV] = "1"
    return [a for a in argv if a != DEBUG_FLAG]


def is_user_error(e: BaseException) -> bool:
    if isinstance(e, UserError):
        return True
    if isinstance(e, FileNotFoundError):
        return True
    if isinstance(e, _PATH_ERRORS) and getattr(e, "filename", None):
        return True
    return any(f"{c.__module__}.{c.__qualname__}" in _USER_ERROR_TYPES for c in type(e).__mro__)


def error_message(e: BaseException) -> str:
    """One line for the user: the exception's own message, without quoting artefacts."""
    if isinstance(e, _PATH_ERRORS) and getattr(e, "filename", None) and not isinstance(e, UserError):
        what = {FileNotFoundError: "no such file or directory",
                NotADirectoryError: "not a directory", IsADirectoryError: "is a directory",
                PermissionError: "permission denied"}
        reason = next((v for k, v in what.items() if isinstance(e, k)), e.strerror or str(e))
        msg = f"{reason}: {e.filename}"
    elif isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        msg = e.args[0]  # str(KeyError) would quote it and escape its newlines
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())  # one line


def report(e: BaseException, file=None) -> None:
    print(f"error: {error_message(e)}", file=file or sys.stderr, flush=True)


def _exit_for(e: BaseException, debug: bool) -> Optional[int]:
    """The exit status for an exception out of main, after printing it; None for the others
    (programming errors), which the caller re-raises with their traceback."""
    if isinstance(e, KeyboardInterrupt):
        if debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    if not is_user_error(e):
        return None
    if debug:
        traceback.print_exc()
    report(e)
    return 1


def run(main: Callable[[list], Optional[int]], argv: Optional[Sequence[str]] = None) -> NoReturn:
    """`sys.exit(main(argv))` with user errors as one line. argv defaults to sys.argv[1:]."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    try:
        code = main(strip_debug(argv))
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - sorted by _exit_for, the rest re-raised
        status = _exit_for(e, debug)
        if status is None:
            raise
        sys.exit(status)
    sys.exit(int(code or 0))


def main_wrapper(fn: Callable[[list], Optional[int]]) -> Callable[..., NoReturn]:
    """Decorator form of `run`: `@cli.main_wrapper def main(argv): ...`; call `main()`."""
    @functools.wraps(fn)
    def wrapped(argv: Optional[Sequence[str]] = None) -> NoReturn:
        run(fn, argv)
    wrapped.unwrapped = fn
    return wrapped


HELP_FLAGS = ("-h", "-?", "-help", "--help", "-helpshort", "--helpshort", "-helpfull",
              "--helpfull", "--helpxml")


def run_absl(main: Callable[[list], Optional[int]], *, required: Sequence[str] = (),
             define_flags: Optional[Callable[[], None]] = None,
             argv: Optional[Sequence[str]] = None) -> NoReturn:
    """absl's `app.run(main)` with the same error handling, flag parsing included.

    Flags are defined beforehand or by `define_flags()` (called here, so that errors raised while
    defining them -- `DEFINE_config_dict` applies `--config.x=...` at once -- are handled too; call
    `check_argv_overrides` before it). `required` names flags that must be set; they are checked
    after parsing (not with `flags.mark_flags_as_required`, which makes `--help` fail) and a
    missing one is a one-line error. `--help` exits 0 (absl's exits 1). Before absl parses
    anything, a `--config` file that does not exist is refused; an override of a config field that
    does not exist (`--config.train.batchsize=8`) is one line naming the field and the closest
    existing one.
    """
    from absl import app, flags

    argv = list(sys.argv if argv is None else argv)
    debug = debug_enabled(argv[1:])
    argv = argv[:1] + strip_debug(argv[1:])
    sys.argv[:] = argv  # config flags read their overrides from sys.argv
    asked_help = any(a in HELP_FLAGS for a in argv[1:])

    def checked_main(args):
        missing = [name for name in required if flags.FLAGS[name].value in (None, "")]
        if missing:
            raise UserError(" and ".join(f"--{m}" for m in missing)
                            + (" is" if len(missing) == 1 else " are") + " required (see --help)")
        return main(args)

    def parse(args):
        try:
            return flags.FLAGS(args)
        except SystemExit:
            raise
        except Exception as e:  # noqa: BLE001 - a config mistake is explained, else re-raised
            explained = _config_override_error(flags.FLAGS, args)
            if explained is not None:
                raise explained from e
            if isinstance(e, flags.Error):  # unknown flag, bad flag value: absl's message is good
                raise UserError(str(e)) from e
            raise

    try:
        if define_flags is not None:
            define_flags()
        if not asked_help:
            _check_config_files(flags.FLAGS, argv)
            sys.argv[:] = argv
        app.run(checked_main, argv=argv, flags_parser=parse)
    except SystemExit as e:
        if asked_help and e.code == 1:  # absl's help flag exits 1 after printing the usage
            sys.exit(0)
        raise
    except BaseException as e:  # noqa: BLE001 - sorted by _exit_for, the rest re-raised
        status = _exit_for(e, debug)
        if status is None:
            raise
        sys.exit(status)
    sys.exit(0)


def _config_flags(flag_values) -> dict:
    """{name: flag} of the ml_collections config flags among `flag_values`."""
    out = {}
    for name in flag_values:
        flag = flag_values[name]
        if type(flag).__name__ == "_ConfigFlag" and flag.name == name:
            out[name] = flag
    return out


def _flag_value_in_argv(name: str, argv: Sequence[str]) -> Optional[str]:
    """The last value given to --name (as `--name=v` or `--name v`), or None."""
    value = None
    for i, a in enumerate(argv):
        if a in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith((f"--{name}=", f"-{name}=")):
            value = a.split("=", 1)[1]
    return value


def _config_file_path(value: str) -> str:
    return expand_path(value.split(":", 1)[0])


def _check_config_files(flag_values, argv: list) -> None:
    """A config file named on the command line must exist: checked before anything runs. `~` and
    $VARS in its path are expanded in place (argv is edited)."""
    for name, flag in _config_flags(flag_values).items():
        if type(flag.parser).__name__ != "ConfigFileFlagParser":
            continue
        value = _flag_value_in_argv(name, argv[1:])
        if value is None:
            continue
        path = _config_file_path(value)
        if not path:
            raise ConfigError(f"--{name} is empty: give an experiment config file")
        if not os.path.isfile(path):
            what = "is a directory, not a config file" if os.path.isdir(path) else "not found"
            raise ConfigError(f"config file {what}: {path} (--{name})")
        raw = value.split(":", 1)[0]
        if path != raw:
            expanded = path + value[len(raw):]
            for i, a in enumerate(argv):
                if a == value and i > 0 and argv[i - 1] in (f"--{name}", f"-{name}"):
                    argv[i] = expanded
                elif a in (f"--{name}={value}", f"-{name}={value}"):
                    argv[i] = a.split("=", 1)[0] + "=" + expanded


def _config_override_error(flag_values, argv: Sequence[str]) -> Optional[ConfigError]:
    """A ConfigError naming the first `--config.a.b=...` override whose field does not exist
    (with the closest existing name), or None when every override names a field."""
    for name, flag in _config_flags(flag_values).items():
        overrides = []
        for a in argv[1:]:
            m = a.split("=", 1)[0].lstrip("-")
            for prefix in (f"{name}.", f"no{name}."):
                if m.startswith(prefix):
                    overrides.append(m[len(prefix):])
        if not overrides:
            continue
        if type(flag.parser).__name__ == "ConfigFileFlagParser":
            value = _flag_value_in_argv(name, argv[1:])
            if value is None:
                return ConfigError(f"--{name}.{overrides[0]} needs --{name} FILE before it")
            try:
                config = flag.parser.parse(value)
            except Exception:  # noqa: BLE001 - the config file itself is broken: absl reports it
                return None
        else:
            config = flag.default
        err = check_overrides(name, config, [f"--{name}.{o}" for o in overrides])
        if err is not None:
            return err
    return None


def check_argv_overrides(name: str, config) -> None:
    """Raise a ConfigError for an override `--<name>.a.b=...` in sys.argv naming a field that
    `config` lacks. Call it before `config_flags.DEFINE_config_dict(name, config, ...)`, which
    applies the overrides while the flag is being defined (and fails with a traceback)."""
    err = check_overrides(name, config, sys.argv[1:])
    if err is not None:
        raise err


def check_overrides(name: str, config, argv: Sequence[str]) -> Optional[ConfigError]:
    """The ConfigError for the first `--<name>.a.b=...` in argv whose field does not exist in
    `config` (naming the closest existing field), or None."""
    import difflib

    for a in argv:
        path = a.split("=", 1)[0].lstrip("-")
        if path.startswith(f"no{name}."):
            path = path[len(name) + 3:]
        elif path.startswith(f"{name}."):
            path = path[len(name) + 1:]
        else:
            continue
        if "[" in path:  # indexed paths (a.b[0]): left to config_flags
            continue
        parts = path.split(".")
        cur = config
        for i, part in enumerate(parts):
            here = ".".join(parts[:i])
            keys = _keys(cur)
            if keys is None:
                return ConfigError(f"config field {here} is a value ({cur!r}), not a table: "
                                   f"cannot set {path}")
            if part in keys:
                cur = cur[part]
                continue
            close = difflib.get_close_matches(part, keys, n=1)
            full = ".".join(parts[:i + 1])
            if close:
                hint = "did you mean " + ".".join(parts[:i] + [close[0]]) + "?"
            elif keys:
                hint = f"{here or 'the config'} has: " + ", ".join(sorted(keys))
            else:
                hint = f"{here} is empty"
            return ConfigError(f"unknown config field {full}; {hint}")
    return None


def _keys(node) -> Optional[list]:
    """The field names of a config table (ConfigDict / dict), or None for a value."""
    if hasattr(node, "keys") and hasattr(node, "__getitem__"):
        try:
            return [str(k) for k in node.keys()]
        except Exception:  # noqa: BLE001
            return None
    return None
