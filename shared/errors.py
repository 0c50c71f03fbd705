"""The one user-facing error type. Its message says what went wrong and how to fix it."""


class EdgeloopError(Exception):
    """An error the user can act on (bad input, missing file, failed check), as opposed to a bug."""
