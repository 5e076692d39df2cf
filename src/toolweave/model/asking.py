"""A step that asks a person (``ask:``): approve or reject, edit values, or choose among candidates.

Such a step runs no tool. When it is ready its mappings are resolved (``candidates`` to choose
from, prefilled values of the fields to edit, anything else is shown), the question is stored as a
row and the run waits, without a worker, until the run's account (or an ``approvers`` account)
answers or ``timeout`` passes and ``onTimeout`` answers for them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from toolweave.model.definitions import InputParam, _Model, _named_list, parse_duration


class AskKind(StrEnum):
    APPROVE = "approve"
    EDIT = "edit"
    CHOOSE = "choose"


class OnReject(StrEnum):
    FAIL = "fail"
    """The step fails: the run ends ``failed`` (unless the step's errorHandling skips it)."""
    CONTINUE = "continue"
    """The step succeeds with ``approved: false``: later steps branch on it with a condition."""


class OnTimeout(StrEnum):
    REJECT = "reject"
    APPROVE = "approve"
    """Approve: the prefilled values (edit) or the first ``minChoices`` candidates (choose)."""


ASK_TIMEOUT_DEFAULT = 7 * 86400.0
ASK_TIMEOUT_MAX = 90 * 86400.0
ASK_CHOICES_MAX = 100
"""The most candidates a person may be asked to choose among."""
ASK_APPROVERS_MAX = 50
CANDIDATES = "candidates"
"""The input of a choose step that takes the list to choose from."""
QUESTION = "question"
"""An input of any ask step that overrides its question text (e.g. a template)."""


class AskSpec(_Model):
    """What an ``ask`` step asks and what happens without an answer."""

    kind: AskKind
    question: str = Field(min_length=1, max_length=2000)
    fields: list[InputParam] = Field(default_factory=list)
    """Edit: the values the person may change (prefilled from the step's mappings and defaults)."""
    min_choices: int = Field(default=1, ge=1, le=ASK_CHOICES_MAX)
    max_choices: int = Field(default=1, ge=1, le=ASK_CHOICES_MAX)
    timeout: float = ASK_TIMEOUT_DEFAULT
    """Seconds (or ``"30m"``, ``"12h"``, ``"7d"``) the person has; then ``onTimeout`` answers."""
    on_timeout: OnTimeout = OnTimeout.REJECT
    on_reject: OnReject = OnReject.FAIL
    approvers: list[str] = Field(default_factory=list, max_length=ASK_APPROVERS_MAX)
    """Accounts that may answer besides the run's own."""

    _fields = field_validator("fields", mode="before")(_named_list)

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        seconds = parse_duration(value)
        if seconds > ASK_TIMEOUT_MAX:
            raise ValueError(f"an ask timeout is at most 90 days, not {value!r}")
        return seconds

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: list[str]) -> list[str]:
        for account in value:
            if not isinstance(account, str) or not account.strip() or len(account) > 64:
                raise ValueError(f"an approver is an account id of 1 to 64 characters, not {account!r}")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> AskSpec:
        if self.fields and self.kind is not AskKind.EDIT:
            raise ValueError(f"fields apply to an edit question; this one is {self.kind.value}")
        if self.kind is AskKind.EDIT and not self.fields:
            raise ValueError("an edit question needs fields: the values the person may change")
        for param in self.fields:
            if param.type.is_media:
                raise ValueError(
                    f"field {param.name!r} is {param.type.value}; an edit question takes string, text, integer, "
                    "number, boolean, enum, seed or json fields"
                )
        if self.kind is AskKind.CHOOSE and self.min_choices > self.max_choices:
            raise ValueError(f"minChoices ({self.min_choices}) is more than maxChoices ({self.max_choices})")
        return self

    @property
    def single(self) -> bool:
        """A choose question whose answer is one candidate (``chosen`` is that value, not a list)."""
        return self.max_choices == 1

    def field(self, name: str) -> InputParam | None:
        return next((f for f in self.fields if f.name == name), None)
