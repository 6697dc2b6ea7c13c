"""The errors a user can fix. The CLI prints each as one paragraph and exits with status 2;
anything else is a bug and exits 1 (``SSMKIT_DEBUG=1`` shows the traceback).

Every message names the offending file, key or value and what was expected.
"""

from __future__ import annotations


class UserError(ValueError):
    """Base of every error the user can fix by changing a file, a flag or a config value."""


class DataError(UserError):
    """A dataset path or input file that is missing, empty, unreadable or not in the expected
    layout; the message names the file and, for folders, prints the expected layout."""


class NonFiniteError(DataError):
    """NaN or inf where finite numbers are required: in an input (with its row and column) or
    in a model output (damaged weights, out-of-range input)."""


class OutputError(UserError):
    """An output path that would overwrite an existing file, the input, or cannot be created."""


class MissingExtraError(UserError):
    """An app or model whose optional dependencies are not installed; names the extra to install."""


__all__ = ["DataError", "MissingExtraError", "NonFiniteError", "OutputError", "UserError"]
