"""The command line, one module per command group (``main`` parses and dispatches). The only package
allowed to import everything."""

from guard.cli.main import main

__all__ = ["main"]
