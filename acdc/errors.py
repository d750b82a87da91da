"""One exception family for everything a user can get wrong.

The CLI catches `AcdcError` at its boundary and prints the message as one line with exit
code 1. Messages therefore name the file, key or prompt at fault and say how to fix it.
"""


class AcdcError(Exception):
    """A problem with the user's input or environment, reported as one line."""


class TaskError(AcdcError):
    """A task file (or a task override) is invalid."""


class ModelError(AcdcError):
    """A model cannot be found, loaded or handled by the engine."""


class GraphError(AcdcError):
    """A graph, circuit file or edge name is invalid."""
