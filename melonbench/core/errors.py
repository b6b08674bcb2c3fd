"""The errors melonbench knows how to explain in one line.

`melonbench.cli.main` prints any :class:`MelonbenchError` as a single red line and exits with code 2; every
other exception is a bug and keeps its traceback. Set ``MELONBENCH_DEBUG=1`` to see the traceback of known
errors too.
"""


class MelonbenchError(Exception):
    """A problem with the user's input or environment, explained by its message."""


class UnknownNameError(MelonbenchError, KeyError):
    """A dataset, model or strategy name that is not in its registry."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class DataError(MelonbenchError):
    """Raw input that cannot be read: corrupt archive, missing column, bad value, nothing left after filtering."""


class ChecksumError(DataError):
    """A downloaded or local file whose sha256 differs from the expected one."""


class NotPreparedError(MelonbenchError):
    """A command needs a dataset that has not been prepared yet."""


class IncompatibleError(MelonbenchError):
    """A strategy/model pair (or option combination) that cannot run together."""


class CheckpointError(MelonbenchError):
    """A checkpoint or saved state that cannot be trusted (corrupt, or made for another configuration)."""


class DivergenceError(MelonbenchError):
    """Training produced a non-finite loss."""


class StoreError(MelonbenchError):
    """The store (``$MELONBENCH_HOME``) or a result folder cannot be written: read-only, a file, no space."""
