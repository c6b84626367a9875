"""User-facing errors.

A `UserError` is something the user can fix (a bad config key, a missing file, an
unreadable image under the `error` policy). The CLI prints its message as one line on
stderr and exits with code 2; everything else is an internal error (exit code 1).
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; the message is one line naming the culprit."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep messages to one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))


class ConfigError(UserError):
    """Invalid configuration: the message names the file and the key path."""


class DataError(UserError):
    """Unusable input data: images, label files, image lists."""


class ModelError(UserError):
    """An ONNX model that cannot be used as configured."""


class TableError(UserError):
    """A calibration table that cannot be read, written or trusted."""


class BackendUnavailable(UserError):
    """The requested backend (TensorRT, pycuda, a GPU) is not installed or not usable."""


class OutputError(UserError, OSError):
    """An output that cannot be written: disk full, read-only, a directory where a file goes (also an OSError,
    so code that handles OS errors around a write still sees one)."""
