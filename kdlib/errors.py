"""One exception type for every bad input a user can give kdlib.

The CLI prints a ``KDLibError`` as a single line (``kdbook: error: ...``) and exits with status 2;
library callers can catch it. Messages name the bad value and the valid choices.
"""


class KDLibError(ValueError):
    """A bad input: the message names the value and what would have been accepted."""


def choices(values) -> str:
    return ", ".join(str(v) for v in values)


def check_choice(kind: str, value, valid) -> None:
    valid = list(valid)
    if value not in valid:
        raise KDLibError(f"unknown {kind} {value!r}; valid choices: {choices(valid)}")
