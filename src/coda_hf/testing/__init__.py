"""Test utilities shipped with the package (usable by downstream projects' tests too)."""

from .hub_server import LocalHubServer

__all__ = ["LocalHubServer"]
