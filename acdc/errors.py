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


def did_you_mean(word: str, options) -> str:
    """' (did you mean 'x'?)' for the closest option, or '' when none is close."""
    import difflib

    if len(word) > 100:  # no option is that long, and difflib's time grows with the word
        return ""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def kind_of(value) -> str:
    """What a YAML value is, in words, for messages such as 'expected a list, got a string'."""
    from collections.abc import Mapping

    if value is None:
        return "nothing"
    for kind, name in ((bool, "a boolean"), (str, "a string"), ((int, float), "a number"),
                       (list, "a list"), (Mapping, "a mapping")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def short_repr(value, limit: int = 60) -> str:
    """A value read from a file, for a one-line message: its repr cut to `limit` characters
    (lists and mappings by their kind, since they can be any size)."""
    if isinstance(value, (list, dict)):
        return kind_of(value)
    text = repr(value) if not isinstance(value, str) else repr(value[: limit + 1])
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RunWarning(UserWarning):
    """Something a user should know about a run (half precision, a threshold near the rounding
    noise, a fallback); the CLI shows each as one line `warning: ...`."""


def first_line(error: BaseException) -> str:
    """The first line of a library's exception message (or its type), for a one-line error."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
