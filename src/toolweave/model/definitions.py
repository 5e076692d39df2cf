"""Definition models: tools, jobs, steps, input mappings, costing.

Field names follow the seed notes: camelCase in files (aliases), snake_case in Python.
``inputSchema`` / ``outputSchema`` may be written as a mapping keyed by name or as a list of
``{name, ...}``; both load into a list.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    from toolweave.model.asking import AskSpec


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
    )

    def dump(self) -> dict[str, Any]:
        """The definition as it would be written in a file (camelCase, no unset fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ParamType(StrEnum):
    STRING = "string"
    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    ENUM = "enum"
    SEED = "seed"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    FILE = "file"
    JSON = "json"

    @property
    def is_media(self) -> bool:
        return self in MEDIA_TYPES


MEDIA_TYPES = frozenset({ParamType.IMAGE, ParamType.VIDEO, ParamType.AUDIO, ParamType.FILE})
ALLOWED_TYPES = ", ".join(t.value for t in ParamType)


def _param_type(value: Any) -> Any:
    if isinstance(value, str) and value not in ParamType._value2member_map_:
        raise ValueError(f"unknown type {value!r}; allowed types are: {ALLOWED_TYPES}")
    return value


class Visibility(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    HIDDEN = "hidden"


class VisibleIf(_Model):
    """Show (and ask for) an input only when another input has one of ``values``:
    ``{field: operation, values: [concat]}`` (``value: x`` is short for ``values: [x]``). A hidden
    input is not demanded even when required, and a value given for it is ignored."""

    field: str = Field(min_length=1)
    values: list[Any] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_value(cls, data: Any) -> Any:
        if isinstance(data, dict) and "value" in data and "values" not in data:
            data = {k: v for k, v in data.items() if k != "value"} | {"values": [data["value"]]}
        return data


class InputParam(_Model):
    name: str
    type: ParamType
    required: bool = False
    default: Any = None
    description: str = ""
    display_name: str | None = None
    enum: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    advanced: bool = False
    order: int | None = None
    accepts_url: bool = False
    """A string input that takes a URL: media outputs may be mapped into it (passed as their URL)."""
    visible_if: VisibleIf | None = None

    _check_type = field_validator("type", mode="before")(_param_type)


class OutputParam(_Model):
    name: str
    type: ParamType
    description: str = ""

    _check_type = field_validator("type", mode="before")(_param_type)


class JobOutput(_Model):
    name: str
    type: ParamType
    description: str = ""
    source_step_id: str | None = None
    source_output_name: str | None = None
    path: str | None = None

    _check_type = field_validator("type", mode="before")(_param_type)


def _named_list(value: Any) -> Any:
    """Accept ``{name: {...}}`` as well as ``[{name: ..., ...}]``."""
    if value is None:
        return []
    if isinstance(value, dict):
        items = []
        for key, spec in value.items():
            if not isinstance(spec, dict):
                raise ValueError(f"entry {key!r} must be a mapping of its fields")
            if "name" in spec and spec["name"] != key:
                raise ValueError(f"entry {key!r} names itself {spec['name']!r}")
            items.append({"name": key, **spec})
        return items
    return value


class Money(_Model):
    amount: Decimal = Field(ge=0)
    unit: str = "USD"


class RateSource(StrEnum):
    STATIC = "static"
    MACHINE = "machine"
    OUTPUT_UNIT = "output_unit"
    TABLE = "table"
    USAGE = "usage"


"""USD per second by machine class (the predecessor's rates); settings may override them."""


class PriceTable(_Model):
    """Prices keyed by input values, nested in the order of ``by`` (the predecessor's ``costTable``):
    ``{by: [model, size, quality], prices: {dall-e-3: {1024x1024: {standard: 0.04, hd: 0.08}}}}``.
    ``default`` is the price of a combination the table does not list (none: the cost is unknown);
    ``multiplyBy`` names a numeric input the price is multiplied by (``n`` images)."""

    by: list[str] = Field(min_length=1)
    prices: dict[str, Any]
    default: Decimal | None = Field(default=None, ge=0)
    multiply_by: str | None = None


class UsagePrice(_Model):
    """A price per unit of something the backend's response reports (``path`` into it), e.g.
    ``{path: usage.prompt_tokens, price: 0.15, per: 1000000}``. A response reporting its cost
    directly is ``{path: usage.cost, price: 1}``."""

    path: str = Field(min_length=1)
    price: Decimal = Field(ge=0)
    per: int = Field(default=1, ge=1)


class CostingModel(_Model):
    """How a generation's cost is computed.

    - ``static``: ``staticCost.amount`` per run;
    - ``machine``: per second of measured run time, at ``rate`` or at the rate of ``machineClass``
      looked up in the rate table;
    - ``output_unit``: ``unitCost.amount`` per output unit (``unitOutput`` names the output counted);
    - ``table``: a price looked up by input values (``priceTable``), known before the run;
    - ``usage``: from what the response reports (``usage``: tokens, seconds, a cost), summed.
    """

    rate_source: RateSource
    static_cost: Money | None = None
    rate: Decimal | None = Field(default=None, ge=0)
    machine_class: str | None = None
    unit_cost: Money | None = None
    unit_output: str | None = None
    price_table: PriceTable | None = None
    usage: list[UsagePrice] | None = None

    @model_validator(mode="after")
    def _complete(self) -> CostingModel:
        if self.rate_source is RateSource.STATIC and self.static_cost is None:
            raise ValueError("a static costing model needs staticCost")
        if self.rate_source is RateSource.MACHINE and self.rate is None and self.machine_class is None:
            raise ValueError("a machine costing model needs a rate or a machineClass")
        if self.rate_source is RateSource.OUTPUT_UNIT and self.unit_cost is None:
            raise ValueError("an output_unit costing model needs unitCost")
        if self.rate_source is RateSource.TABLE and self.price_table is None:
            raise ValueError("a table costing model needs priceTable")
        if self.rate_source is RateSource.USAGE and not self.usage:
            raise ValueError("a usage costing model needs usage: [{path, price, per}]")
        return self


class PlatformHints(_Model):
    model_config = ConfigDict(extra="allow")

    primary_input: str | None = None
    handler_type: str | None = None
    category: str | None = None


COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
"""Tool, job and step ids: they name files, URL paths and CEL fields, so no path characters."""


def _check_id(value: str) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        shown = value if len(str(value)) <= 80 else str(value)[:77] + "..."
        raise ValueError(
            f"the id {shown!r} may use only letters, digits, '_', '-' and '.', must start with a letter or "
            "digit and be at most 200 characters"
        )
    return value


def derive_command_name(display_name: str) -> str:
    """Lowercase, ``[a-z0-9_]``, at most 32 characters (Telegram's command rules)."""
    name = re.sub(r"[^a-z0-9]+", "_", display_name.lower()).strip("_")
    return (name or "tool")[:32].rstrip("_") or "tool"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``3600``, ``"90s"``, ``"15m"``, ``"12h"``, ``"30d"`` or ``"2w"``; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"a duration is a number of seconds or text like '30d', not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"a duration is a number of seconds or text like '90s', '15m', '12h', '30d', '2w'; not {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"a duration must be more than 0 seconds, not {value!r}")
    return seconds


CACHE_DEFAULT_SECONDS = 7 * 86400.0
CACHE_MAX_SECONDS = 366 * 86400.0


class CachePolicy(_Model):
    """Whether a step's results are reused, and for how long. Written ``cache: true`` (a week),
    ``cache: 30d``, ``cache: {lifetime: 12h}``, or ``cache: false`` (a step opting out of its
    tool's cache)."""

    enabled: bool = True
    lifetime: float = CACHE_DEFAULT_SECONDS
    """Seconds a result may be reused after it was made (written as a number or like ``30d``)."""

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {"enabled": value}
        if isinstance(value, int | float | str):
            return {"lifetime": value}
        return value

    @field_validator("lifetime", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        seconds = parse_duration(value)
        if seconds > CACHE_MAX_SECONDS:
            raise ValueError(f"a cache lifetime is at most 366 days, not {value!r}")
        return seconds


class ToolDefinition(_Model):
    tool_id: str = Field(min_length=1)
    _check_tool_id = field_validator("tool_id")(_check_id)
    service: str = Field(min_length=1)
    display_name: str = ""
    command_name: str | None = None
    description: str = ""
    version: str = "1"
    input_schema: list[InputParam] = Field(default_factory=list)
    output_schema: list[OutputParam] = Field(default_factory=list)
    costing_model: CostingModel | None = None
    platform_hints: PlatformHints = Field(default_factory=PlatformHints)
    delivery_hints: dict[str, Any] = Field(default_factory=dict)
    visibility: Visibility = Visibility.PUBLIC
    timeout_seconds: float | None = Field(default=None, gt=0)
    cache: CachePolicy | None = None
    """Reuse a result of this tool for the same inputs (a step may opt out with ``cache: false``)."""
    metadata: dict[str, Any] = Field(default_factory=dict)

    _source: str | None = PrivateAttr(default=None)

    _inputs = field_validator("input_schema", "output_schema", mode="before")(_named_list)

    @model_validator(mode="after")
    def _fill(self) -> ToolDefinition:
        if not self.display_name:
            self.display_name = self.tool_id
        if self.command_name is None:
            self.command_name = derive_command_name(self.display_name)
        elif not COMMAND_NAME_RE.match(self.command_name):
            raise ValueError(
                f"commandName {self.command_name!r} must be 1-32 characters of a-z, 0-9 and _"
            )
        return self

    @property
    def source(self) -> str | None:
        """The file the definition was loaded from, if any."""
        return self._source

    def input(self, name: str) -> InputParam | None:
        return next((p for p in self.input_schema if p.name == name), None)

    def output(self, name: str) -> OutputParam | None:
        return next((p for p in self.output_schema if p.name == name), None)


class ErrorStrategy(StrEnum):
    HALT = "halt"
    SKIP = "skip"
    RETRY = "retry"
    FALLBACK = "fallback"


class ErrorHandling(_Model):
    strategy: ErrorStrategy = ErrorStrategy.HALT
    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff_seconds: float = Field(default=1.0, ge=0)
    max_backoff_seconds: float = Field(default=60.0, ge=0)
    then: ErrorStrategy = ErrorStrategy.HALT
    fallback_tool_id: str | None = None

    @model_validator(mode="after")
    def _coherent(self) -> ErrorHandling:
        if self.then is ErrorStrategy.RETRY:
            raise ValueError("then: cannot be retry; it says what follows exhausted retries")
        uses_fallback = ErrorStrategy.FALLBACK in (self.strategy, self.then)
        if uses_fallback and not self.fallback_tool_id:
            raise ValueError("the fallback strategy needs fallbackToolId")
        return self


class ValueSource(_Model):
    """Where one value comes from: a job input, an earlier step's output (and a ``path`` into it) or
    a static ``value``; ``default`` stands in when a source step did not succeed.

    ``value`` and ``default`` may legitimately be ``null``, so whether they were given is read
    from ``model_fields_set`` (see ``has_value`` / ``has_default``).
    """

    source_job_input: str | None = None
    source_step_id: str | None = None
    source_output_name: str | None = None
    path: str | None = None
    value: Any = None
    default: Any = None

    @property
    def has_value(self) -> bool:
        return "value" in self.model_fields_set

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set

    @property
    def sources(self) -> list[str]:
        """The kinds of source this names (a valid one names exactly one)."""
        found = []
        if self.source_job_input is not None:
            found.append("sourceJobInput")
        if self.source_step_id is not None or self.source_output_name is not None:
            found.append("sourceStepId")
        if self.has_value:
            found.append("value")
        return found


class InputMapping(ValueSource):
    """Where one input of a step comes from: exactly one source — those of ``ValueSource``, a
    ``template``, ``sourceItem`` (the item of a map step, or a ``path`` into it) or ``collect`` (a
    list gathered from several sources)."""

    target_input_name: str
    template: str | None = None
    source_item: bool | None = None
    collect: list[ValueSource] | None = None

    @property
    def sources(self) -> list[str]:
        found = super().sources
        if self.template is not None:
            found.append("template")
        if self.source_item:
            found.append("sourceItem")
        if self.collect is not None:
            found.append("collect")
        return found


MAP_CONCURRENCY_LIMIT = 100
"""The most items of one map step in flight at once: the planner looks at the items in flight and
at most this many waiting ones on each transition, whatever the number of items."""
MAP_ITEMS_LIMIT = 100_000

_PERCENT = re.compile(r"^(\d{1,3}(?:\.\d+)?)\s*%$")


class MapSpec(_Model):
    """A map step runs its tool (or nested job) once per item of the list ``over`` names, with at
    most ``concurrency`` items in flight; its outputs are lists, one entry per item in input order
    (null for an item that failed). ``minSuccess`` (a count or a percentage of the items; default:
    every item) says how many items must succeed for the step to succeed."""

    over: ValueSource
    concurrency: int = Field(default=8, ge=1, le=MAP_CONCURRENCY_LIMIT)
    min_success: int | str | None = None
    max_items: int = Field(default=10_000, ge=1, le=MAP_ITEMS_LIMIT)

    @field_validator("min_success")
    @classmethod
    def _min_success(cls, value: int | str | None) -> int | str | None:
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        if isinstance(value, str):
            match = _PERCENT.match(value.strip())
            if match and float(match.group(1)) <= 100:
                return value.strip()
        raise ValueError(f"minSuccess must be a count of items (0 or more) or a percentage like '80%', not {value!r}")

    def required(self, total: int) -> int:
        """How many of ``total`` items must succeed."""
        value = self.min_success
        if value is None:
            return total
        if isinstance(value, str):
            share = float(value.rstrip("% ")) / 100
            return min(total, math.ceil(total * share - 1e-9))
        return min(total, value)


class Step(_Model):
    step_id: str = Field(min_length=1)
    _check_step_id = field_validator("step_id")(_check_id)
    tool_id: str | None = None
    job_id: str | None = None
    input_mappings: list[InputMapping] = Field(default_factory=list)
    dependencies: list[str] = Field(default_factory=list)
    condition: str | None = None
    error_handling: ErrorHandling | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    map: MapSpec | None = None
    cache: CachePolicy | None = None
    """Reuse a result for the same tool and inputs (overrides the tool's ``cache``)."""
    ask: AskSpec | None = None
    """A step that asks a person instead of running a tool (``model.asking``)."""

    @property
    def target_id(self) -> str:
        return self.tool_id or self.job_id or ""

    @property
    def value_sources(self) -> list[ValueSource]:
        """Every source the step reads: its mappings, the parts of a ``collect``, its map's list."""
        found: list[ValueSource] = []
        for m in self.input_mappings:
            found.append(m)
            found.extend(m.collect or [])
        if self.map is not None:
            found.append(self.map.over)
        return found

    @property
    def all_dependencies(self) -> list[str]:
        """Explicit dependencies plus those implied by the step's sources, in order."""
        deps = list(self.dependencies)
        for source in self.value_sources:
            if source.source_step_id is not None and source.source_step_id not in deps:
                deps.append(source.source_step_id)
        return deps


class JobDefinition(_Model):
    job_id: str = Field(min_length=1)
    _check_job_id = field_validator("job_id")(_check_id)
    display_name: str = ""
    command_name: str | None = None
    description: str = ""
    version: str = "1"
    input_schema: list[InputParam] = Field(default_factory=list)
    output_schema: list[JobOutput] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)
    error_handling_strategy: ErrorStrategy = ErrorStrategy.HALT
    platform_hints: PlatformHints = Field(default_factory=PlatformHints)
    delivery_hints: dict[str, Any] = Field(default_factory=dict)
    visibility: Visibility = Visibility.PUBLIC
    timeout_seconds: float | None = Field(default=None, gt=0)
    """The run deadline, counted from the run's start."""
    metadata: dict[str, Any] = Field(default_factory=dict)

    _source: str | None = PrivateAttr(default=None)

    _inputs = field_validator("input_schema", "output_schema", mode="before")(_named_list)

    @model_validator(mode="after")
    def _fill(self) -> JobDefinition:
        if not self.display_name:
            self.display_name = self.job_id
        if self.command_name is None:
            self.command_name = derive_command_name(self.display_name)
        elif not COMMAND_NAME_RE.match(self.command_name):
            raise ValueError(
                f"commandName {self.command_name!r} must be 1-32 characters of a-z, 0-9 and _"
            )
        return self

    @property
    def source(self) -> str | None:
        return self._source

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.step_id == step_id), None)

    def input(self, name: str) -> InputParam | None:
        return next((p for p in self.input_schema if p.name == name), None)

    def error_handling_for(self, step: Step) -> ErrorHandling:
        if step.error_handling is not None:
            return step.error_handling
        return ErrorHandling(strategy=self.error_handling_strategy)


from toolweave.model.asking import AskSpec  # noqa: E402  (it builds on the models above)

Step.model_rebuild()
JobDefinition.model_rebuild()
