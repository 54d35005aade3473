"""What every API body shares: the base model, scene ids in requests and responses, the
split names and the one error body."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

MAX_SCENE_ID = 2**63 - 1
ID_PATTERN = "^[0-9]{1,19}$"
ID_DESCRIPTION = (
    "A scene id: a 63-bit integer, sent as a string of digits because JavaScript reads JSON "
    "numbers as doubles and loses digits past 2^53."
)

SceneId = Annotated[
    int,
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "pattern": ID_PATTERN, "description": ID_DESCRIPTION,
         "examples": ["6198235272819611846"]}
    ),
]  # fmt: skip
"""A scene id in a response: a string of digits in JSON."""

SceneIdIn = Annotated[
    int,
    Field(ge=0, le=MAX_SCENE_ID),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_SCENE_ID},
                {"type": "string", "pattern": ID_PATTERN},
            ],
            "description": ID_DESCRIPTION + " An integer is accepted too.",
        }
    ),
]
"""A scene id in a request: a string of digits (as responses give them) or an integer."""


class Schema(BaseModel):
    """The API's bodies: each field's docstring is its description in the OpenAPI document."""

    model_config = ConfigDict(use_attribute_docstrings=True)


Split = Literal["train", "val", "test"]


class ErrorBody(Schema):
    status: int
    """The HTTP status."""
    error: str
    """A stable code: invalid_image, too_large, scene_not_found, not_ready, ..."""
    message: str
    """What was wrong and what to do, in words."""
    details: list[dict[str, object]] | None = None
    """For 422: each invalid field (`loc`, `msg`, `type`)."""
