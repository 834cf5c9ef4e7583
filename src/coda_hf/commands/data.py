"""``coda-hf data``: moved out of the installed package (it downloads Debian packages; nothing a user imports).

The dataset builders are repository tooling now: ``python tools/prepare_data.py prepare-photos ...`` from a
coda_hf checkout. This command stays only to say so, naming the new command, with exit code 2.
"""

from __future__ import annotations

import argparse

MOVED = (
    "`coda-hf data` moved out of the installed package: from a coda_hf checkout run "
    "`python tools/prepare_data.py {command} ...` (after `pip install -e \".[data]\"`; --help lists the options)"
)


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="(moved) offline datasets: python tools/prepare_data.py, from a checkout",
                              description=MOVED.format(command="prepare-photos|prepare-fashion-mnist"))  # fmt: skip
    p.add_argument("arguments", nargs=argparse.REMAINDER, help="ignored: the command moved")
    p.set_defaults(func=run_moved)


def run_moved(args) -> int:
    command = args.arguments[0] if args.arguments and not args.arguments[0].startswith("-") else "prepare-photos"
    raise ValueError(MOVED.format(command=command))
