"""Exceptions with messages meant for people, not tracebacks."""
from __future__ import annotations


class LmkcoreError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(LmkcoreError, ValueError):
    """A parameter or configuration value is invalid (names the parameter)."""


class DataError(LmkcoreError, ValueError):
    """An input file is missing, unreadable or inconsistent (names the file)."""
