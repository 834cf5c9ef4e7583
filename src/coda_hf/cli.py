"""The ``coda-hf`` command line.

Each subcommand lives in its own module under :mod:`coda_hf.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (returning an exit code).

Errors (one place for every command): a command raises, :func:`main` prints ONE line
``coda-hf <command>: error: <message naming the input>`` and returns 2 for usage errors (bad options,
missing or wrong inputs, unwritable or existing outputs: ``ValueError`` and the ``OSError`` kinds below),
1 for anything else. ``--debug`` (before or after the command) re-raises instead, with the traceback.
Exit code 1 also means "some inputs failed, the others finished" (e.g. unreadable images in ``tokenize``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from . import commands

# Exceptions that mean "the user's input or options are wrong": exit code 2.
USAGE_ERRORS = (
    ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
)


def _add_to_every_parser(parser: argparse.ArgumentParser, *flags: str, **kwargs) -> None:
    parser.add_argument(*flags, **kwargs)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_to_every_parser(sub, *flags, **{**kwargs, "default": argparse.SUPPRESS})


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after each option's help, unless the help already states its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        return text if "default" in text else super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every command's ``--help`` shows each option's default; an error is one line (usage stays available
    through ``--help``)."""

    def __init__(self, *args, formatter_class=_DefaultsFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="coda-hf", description="Discrete image tokenizers for the Hugging Face stack.")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ...)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    _add_to_every_parser(parser, "--debug", action="store_true", default=False,
                         help="show the full traceback of an error (default: off)")  # fmt: skip
    return parser


def one_line(error: BaseException) -> str:
    """An exception as one line (library messages may span several)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        sys.stderr.write(f"coda-hf {args.command}: interrupted\n")
        return 130
    except Exception as e:
        if args.debug:
            raise
        usage = isinstance(e, USAGE_ERRORS)
        kind = "" if usage else f"{type(e).__name__}: "
        hint = "" if usage else " (rerun with --debug for the traceback)"
        sys.stderr.write(f"coda-hf {args.command}: error: {kind}{one_line(e)}{hint}\n")
        return 2 if usage else 1


if __name__ == "__main__":
    sys.exit(main())
