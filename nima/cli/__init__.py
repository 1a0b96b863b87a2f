"""The `nima` command line: one module per command, `common` for what they share, `app` registers them."""

from nima.cli.app import app, main

__all__ = ["app", "main"]
