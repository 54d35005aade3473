"""The API's request and response bodies (pydantic), apart from the SQL models: one module
per topic, as the routes are (`common`: ids, the base model, the error body; `filters`: the
filter fields a search and the listing share).

`ImageClassification` is named here too because `grn classify` imports it from here."""

from service.api.schemas.classify import ImageClassification as ImageClassification
