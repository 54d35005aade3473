"""Domain errors that several layers raise: plain exceptions, no HTTP. The API maps them
(and the errors that live beside the code raising them) to statuses in one table,
`service.api.errors`; the CLI prints their message on one line."""

from __future__ import annotations


class SceneNotFoundError(LookupError):
    """No scene with this id in the store."""

    def __str__(self) -> str:  # a KeyError-like repr would quote the message
        return str(self.args[0]) if self.args else "no such scene"


class BadRequestError(ValueError):
    """A request that names things that do not exist or asks for something impossible."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code
