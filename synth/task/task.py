"""The task a recipe describes: its name, description and the output fields a sample has.

Its own module because strategies, the pipeline and the recipe all read it: the recipe
imports the strategies' registry, so a strategy importing the recipe would be a circle.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synth.task.formats import OutputField


class Task(BaseModel):
    """What the dataset is: its name, description and output fields (with the roles of
    question and answer), as the recipe's `task:` section writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = Field(min_length=10)
    output_fields: dict[str, OutputField]
    question_field: str | None = None  # the field that holds the instruction/question
    answer_field: str | None = None  # the field that holds the answer/solution

    @field_validator("output_fields")
    @classmethod
    def _fields(cls, value: dict[str, OutputField]) -> dict[str, OutputField]:
        if not value:
            raise ValueError("list at least one output field, e.g. `question: {description: ...}`")
        for name in value:
            if not name.isidentifier():
                raise ValueError(f"field name {name!r} must be a plain identifier (letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _roles(self) -> "Task":
        names = list(self.output_fields)
        for role in ("question_field", "answer_field"):
            chosen = getattr(self, role)
            if chosen is not None and chosen not in self.output_fields:
                raise ValueError(f"{role} {chosen!r} is not one of output_fields ({', '.join(names)})")
        return self

    @property
    def question(self) -> str:
        return self.question_field or next(iter(self.output_fields))

    @property
    def answer(self) -> str:
        if self.answer_field:
            return self.answer_field
        names = list(self.output_fields)
        return names[1] if len(names) > 1 else names[0]
