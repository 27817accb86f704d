"""User-facing errors.

Anything a user can get wrong (a config, a path, a file's contents) raises one of these with a single
line that says what is wrong and how to fix it. The CLI prints that line and exits with status 2;
every other exception is a bug and keeps its traceback.
"""


class RnnkitError(Exception):
    """A problem the user can fix; the message is shown as is, on one line."""

    exit_code = 2


class ConfigError(RnnkitError, ValueError):
    """The YAML config or a ``--set`` override is invalid (in Python also a ``ValueError``)."""


class DataError(RnnkitError, ValueError):
    """A data set, vector file or text input cannot be used (in Python also a ``ValueError``)."""


class DataTypeError(DataError, TypeError):
    """Python data of the wrong type, e.g. a text that is not a string (also a ``TypeError``)."""


class CheckpointError(RnnkitError):
    """A run folder or checkpoint is missing, corrupted, unsafe or already in use."""
