"""Errors in what the user gave us, and the console-script wrapper that prints them as one line.

A bad path, label, option, value or length is the user's to fix: the process ends with
``error: <what is wrong and how to fix it>`` as its last stderr line and exit status 2, with no
traceback (``LIGHTNING_RLHF_DEBUG=1`` or ``--debug`` shows it). Anything else is a bug and keeps
its traceback. A run stopped by SIGTERM ends with exit status 143 (128 + SIGTERM), as if killed.
The classes also derive from the built-in type a caller would expect (``ValueError``,
``FileNotFoundError``, ...), so ``except ValueError`` still catches them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path


class InputError(Exception):
    """Marks an exception as the user's input being wrong."""


class ConfigError(InputError, ValueError):
    """A value or combination of values that cannot work."""


class MissingInputError(InputError, FileNotFoundError):
    """A path (data, export, tokenizer) that does not exist or is incomplete."""


class InputImportError(InputError, ImportError):
    """An import path given by the user (``reward_fn``) or an optional package that is missing."""


class InputTypeError(InputError, TypeError):
    """A user function returned the wrong type."""


class UnreachableError(InputError, OSError):
    """A hub id that could not be reached or loaded."""


_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:",
          "Expected a <class 'NoneType'>", "Given value type:", "Given value:", "Namespace(")


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# what jsonargparse adds when a class setting may also be a path or a list (callbacks, logger)
_CLASS_UNION_NOISE = ("Expected a path but", "Not a valid subclass of", "Subclass types expect one of",
                      "a class path (str)", "a dict with", "a dict without")
_IMPORT_FAILURE = ("No module named", "has no attribute", "cannot import", "is not a class")


def _class_path_message(text: str) -> str | None:
    """A class_path that does not import, or names a class of the wrong kind, in one sentence."""
    key = re.match(r'\s*Parser key "([\w.]+)":', text)
    where = f"{key.group(1)}: " if key else ""
    problem = re.search(r"Problem with given class_path '([\w.]+)':\s*\n\s*(.+)", text)
    if problem and any(word in problem.group(2) for word in _IMPORT_FAILURE):
        return (f"{where}class_path '{problem.group(1)}' does not import ({problem.group(2).strip()}); "
                f"check its spelling (package.module.ClassName) or install the package that has it")
    wrong = re.search(r"Import path (?:([\w.]+) )?does not correspond to a subclass of (\w+)", text)
    if wrong:
        given = wrong.group(1) or next(iter(re.findall(r"Given value: ([\w.]+)\s*$", text)), None)
        shown = f"'{given}'" if given else "the class_path given"
        return f"{where}{shown} is not a {wrong.group(2)}; give the class_path of a {wrong.group(2)} class"
    return None


def _parser_message(text: str, prog: str) -> str:
    """jsonargparse's report, without the Union bookkeeping and the ``Namespace(...)`` dump."""
    special = _class_path_message(text)
    if special is not None:
        message = special.replace("Option '", "option '")
        return f"{message}; see `{prog} --help` (a module's options: `--model.help <Module>`)"
    lines = [line.strip(" -") for line in text.splitlines()]
    union = "Problem with given class_path" in text  # the other alternatives' complaints are noise
    noise = _NOISE + (_CLASS_UNION_NOISE if union else ())
    kept = [line for line in lines if line and not line.startswith(noise)
            and not (union and line.startswith("Expected a ") and "Got value" not in line)]
    message = _one_line(" ".join(kept))
    message = re.sub(r'Parser key "([\w.]+)": Problem with given class_path \'(?:\w+\.)*(\w+)\':', r"\1 (\2):",
                     message)
    message = re.sub(r'Parser key "([\w.]+)":', r"\1:", message).replace("Option '", "option '")
    message = re.sub(r"Expected a <class '(\w+)'>\. Got value: (\S+)", r"expected a \1, got '\2'", message)
    message = re.sub(r"Expected a typing\.Literal\[(.*)\]\. Got value: (\S+)", r"expected one of \1, got '\2'", message)
    message = re.sub(r"unrecognized arguments: (fit|validate|test|predict) ", "unrecognized arguments: ", message)
    return f"{message}; see `{prog} --help` (a module's options: `--model.help <Module>`)"


def user_message(err: BaseException, prog: str = "lightning-rlhf") -> str | None:
    """The one-line message for an input error anywhere in ``err``'s chain, or None for a bug."""
    seen, cause = set(), err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, InputError):
            return _one_line(str(cause))
        cause = cause.__cause__ or cause.__context__
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if isinstance(err, ArgumentError):
        return _parser_message(str(err), prog)
    if isinstance(err, MisconfigurationException):
        return _one_line(str(err))
    return None


SIGTERM_EXIT_STATUS = 143  # 128 + SIGTERM: what a shell reports for a process SIGTERM killed


def _stopped_by_sigterm(stop: SystemExit) -> bool:
    """Lightning ends a SIGTERM-ed run with ``SIGTERMException``, a ``SystemExit`` without a code:
    exit status 0, which a scheduler or script would take for a finished run. Lightning is loaded
    whenever one was raised, so it is looked up rather than imported (``--help`` stays fast)."""
    exceptions = sys.modules.get("lightning.pytorch.utilities.exceptions")
    return exceptions is not None and isinstance(stop, exceptions.SIGTERMException)


def run_console(main: Callable[[list[str]], object], prog: str, argv: list[str] | None = None) -> None:
    """Run a console script's ``main(argv)``: input errors become one ``error:`` line and exit
    status 2; a Trainer stopped by SIGTERM (once its callbacks have saved) gives exit status 143."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("LIGHTNING_RLHF_DEBUG", "") not in ("", "0") or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        main(argv)
    except SystemExit as stop:
        if _stopped_by_sigterm(stop):
            sys.exit(SIGTERM_EXIT_STATUS)
        raise
    except Exception as err:
        message = None if debug else user_message(err, prog)
        if message is None:
            raise
        sys.stdout.flush()
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are input errors (one ``error:`` line through ``run_console``)."""

    def error(self, message: str):
        raise ConfigError(f"{message}; `{self.prog} --help` lists the options")


def check_output_folder(path: str | os.PathLike, option: str) -> None:
    """``path`` is a folder a command will create or write into: refuse a file there, or a file in
    place of one of its parent folders, before any work is done."""
    target = Path(os.path.expanduser(str(path)))
    for folder in (target, *target.parents):
        if folder.exists():
            if folder.is_dir():
                return
            where = "is a file" if folder == target else f"lies inside '{folder}', which is a file"
            raise ConfigError(f"{option} '{path}' {where}, not a folder; give a folder path (it is created "
                              f"when missing), or move the file away")


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number above 0 (a sampling temperature)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got '{text}'") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def device_arg(text: str) -> str:
    """argparse type: a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"'{text}': this machine (or this torch build) has no CUDA GPU; "
                                             f"use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"'{text}': this machine has {torch.cuda.device_count()} CUDA "
                                             f"device(s), numbered from 0")
    return text
