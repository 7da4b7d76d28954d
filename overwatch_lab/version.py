"""The package version (re-exported as ``overwatch_lab.__version__``; ``lab.json`` records it)."""

from __future__ import annotations

__version__ = "0.1.0"
