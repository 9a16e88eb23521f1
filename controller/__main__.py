"""`python -m controller` is the `dispatch` command (handy before the package is installed)."""

from controller.cli import entry

entry()
