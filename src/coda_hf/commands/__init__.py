"""Subcommands of ``coda-hf``; each module defines ``register(subparsers)``."""
