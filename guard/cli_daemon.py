"""`guard` subcommands of the daemon part (registered by guard.cli)."""

from __future__ import annotations


def add_commands(sub) -> None:
    """Add this part's subcommands to the `guard` parser."""
