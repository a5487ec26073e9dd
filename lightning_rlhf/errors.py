"""Errors in what the user gave us, and the console-script wrapper that prints them as one line.

A bad path, label, option, value or length is the user's to fix: the process ends with
``error: <what is wrong and how to fix it>`` as its last stderr line and exit status 2, with no
traceback (``LIGHTNING_RLHF_DEBUG=1`` or ``--debug`` shows it). Anything else is a bug and keeps
its traceback. The classes also derive from the built-in type a caller would expect
(``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError`` still catches them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable


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


def _parser_message(text: str, prog: str) -> str:
    """jsonargparse's report, without the Union bookkeeping and the ``Namespace(...)`` dump."""
    lines = [line.strip(" -") for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith(_NOISE)]
    message = _one_line(" ".join(kept))
    message = re.sub(r'Parser key "(\w+)": Problem with given class_path \'(?:\w+\.)*(\w+)\':', r"\1 (\2):", message)
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


def run_console(main: Callable[[list[str]], object], prog: str, argv: list[str] | None = None) -> None:
    """Run a console script's ``main(argv)``; input errors become one ``error:`` line, exit 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("LIGHTNING_RLHF_DEBUG", "") not in ("", "0") or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        main(argv)
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
