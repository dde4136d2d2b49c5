"""The errors privatune raises for bad input.

Every error a user can cause carries enough context (the config key, the file and
line, the client) to fix it without reading a traceback. The CLI prints these
without a traceback and exits with status 2.
"""

from __future__ import annotations


class PrivatuneError(Exception):
    """Base class for errors caused by input the user can fix."""


class ConfigError(PrivatuneError):
    """One or more configuration values are invalid.

    ``problems`` lists every problem found, so the user sees them all at once.
    """

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration{where}:\n{lines}")


class DataError(PrivatuneError):
    """A dataset file or row is unusable; the message names the file and line."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class ModelError(PrivatuneError):
    """A model directory is missing or unusable."""


class UpdateRejected(PrivatuneError):
    """A client's adapter update failed validation on the server."""


class Refused(PrivatuneError):
    """A client declines a request on privacy grounds (its policy, its budget, an
    instruction that would expose an update). Inside a SecAgg+ round a refusal cannot be
    a zero update (the sum would then be the others' alone), so it travels as an error
    reply that says ``refused`` (common/protocol.py) and the server counts it as such."""
