"""Validate, coerce and default inputs against an input schema (the seed's ``prepareToolRunPayload``).

``prepare_inputs`` is used for a single tool call as well as for a job's own inputs. It reports every
problem at once, each with the field's name, in an ``InputError``.

Coercion (``coerce_text=True``) accepts text as it arrives from a chat or a command line:
``"5"`` becomes ``5`` for an integer, ``"true"``/``"yes"``/``"on"``/``"1"`` become ``True`` for a
boolean, enum values match case-insensitively and come back in the spelling of the schema.
Media inputs (image, video, audio, file) take an http(s) URL, a ``data:`` URI, a local path, or an
artifact reference (``{"kind": "artifact", "sha256": ...}``) produced by an earlier step.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from toolweave.model.definitions import InputParam, ParamType
from toolweave.model.records import ArtifactRef

SEED_MAX = 2**32 - 1
"""Random seeds are drawn from ``0..SEED_MAX``; every backend we know accepts that range."""
_SEEDS = random.Random()
"""Where seeds left empty are drawn: a source of its own, so a host program's (or a test
framework's) use of ``random`` neither fixes nor is moved by the seeds of runs."""

_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})
_INT_RE = re.compile(r"^[+-]?\d+$")
_DATA_URI_RE = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I
)
_MEDIA_FAMILY = {ParamType.IMAGE: "image/", ParamType.VIDEO: "video/", ParamType.AUDIO: "audio/"}


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InputError(ValueError):
    """Inputs that do not fit the schema; ``problems`` lists every one of them. ``root`` says where
    the fields are in a request: ``inputs`` (the input values), or ``""`` for fields of the
    request itself (``callbackUrl``)."""

    def __init__(self, problems: list[FieldProblem], *, root: str = "inputs") -> None:
        self.problems = list(problems[:MAX_LISTED_PROBLEMS])
        self.root = root
        count = len(problems)
        head = "1 problem with the inputs" if count == 1 else f"{count} problems with the inputs"
        if count > MAX_LISTED_PROBLEMS:
            head += f" (the first {MAX_LISTED_PROBLEMS})"
        super().__init__(head + ": " + "; ".join(str(p) for p in self.problems))


MAX_LISTED_PROBLEMS = 50
"""Problems an error lists at most (the count says how many there were): 500,000 unknown inputs in a
6 MB body were answered with 77 MB of problems."""


@dataclass(frozen=True)
class Upload:
    """Bytes a front end received for a media input (a multipart file, a chat photo). ``App.submit``
    stores them as an artifact of the account only once every input has been accepted."""

    data: bytes
    filename: str | None = None
    mime_type: str | None = None

    def __repr__(self) -> str:
        return f"Upload({self.filename!r}, {len(self.data)} bytes, {self.mime_type!r})"


class _Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def classify_media(value: Any) -> Literal["url", "data", "path"]:
    """Say which form a media value has: an http(s) ``url``, a ``data`` URI or a local ``path``.

    Raises ``ValueError`` for anything else (other URL schemes, empty text, non-text values).
    """
    if not isinstance(value, str):
        raise ValueError(f"a media value must be text (an http(s) URL or a data: URI) or an artifact, not {_kind(value)}")
    text = value.strip()
    if not text:
        raise ValueError("a media value must not be empty")
    lowered = text.lower()
    if lowered.startswith("data:"):
        if not _DATA_URI_RE.match(text):
            raise ValueError("the data: URI is malformed (expected data:<type>[;base64],<data>)")
        return "data"
    if lowered.startswith(("http://", "https://")):
        if not urlsplit(text).netloc:
            raise ValueError(f"the URL {text!r} has no host")
        return "url"
    scheme = urlsplit(text).scheme
    if scheme.lower() == "artifact":
        raise ValueError('an artifact is given as {"kind": "artifact", "sha256": "…"}, not as artifact: text')
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise ValueError(f"the URL scheme {scheme!r} is not supported; use an http(s) URL or a data: URI")
    return "path"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int_of(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise _Invalid(f"is a number too long to use ({len(text)} digits)") from None


def _as_int(value: Any, coerce_text: bool) -> int:
    if isinstance(value, bool):
        raise _Invalid(f"must be a whole number, not {_kind(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise _Invalid(f"must be a whole number (got {value!r})")
    if isinstance(value, str) and coerce_text:
        text = value.strip()
        if _INT_RE.match(text):
            return _int_of(text)
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number) and number.is_integer():
            return int(number)
        raise _Invalid(f"must be a whole number (got {_show(value)})")
    raise _Invalid(f"must be a whole number, not {_kind(value)}")


def _as_number(value: Any, coerce_text: bool) -> int | float:
    if isinstance(value, bool):
        raise _Invalid(f"must be a number, not {_kind(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid("must be a finite number")
        return value
    if isinstance(value, str) and coerce_text:
        text = value.strip()
        if _INT_RE.match(text):
            return _int_of(text)
        try:
            number = float(text)
        except ValueError:
            raise _Invalid(f"must be a number (got {_show(value)})") from None
        if not math.isfinite(number):
            raise _Invalid("must be a finite number")
        return number
    raise _Invalid(f"must be a number, not {_kind(value)}")


def _as_bool(value: Any, coerce_text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if coerce_text and isinstance(value, int) and value in (0, 1):
        return bool(value)
    if coerce_text and isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _Invalid(f"must be true or false (got {_show(value)})")
    raise _Invalid(f"must be true or false, not {_kind(value)}")


def _as_text(value: Any, coerce_text: bool) -> str:
    if isinstance(value, str):
        return value
    if coerce_text and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _Invalid(f"must be text, not {_kind(value)}")


def _as_enum(param: InputParam, value: Any, coerce_text: bool) -> Any:
    choices = list(param.enum or [])
    if value in choices and not (isinstance(value, bool) and not any(isinstance(c, bool) for c in choices)):
        return value
    if coerce_text:
        wanted = str(value).strip().casefold()
        for choice in choices:
            if str(choice).casefold() == wanted:
                return choice
    raise _Invalid(f"must be one of {', '.join(str(c) for c in choices)} (got {_show(value)})")


def _as_media(param: InputParam, value: Any, allow_paths: bool) -> Any:
    if ArtifactRef.is_ref(value):
        return value
    if isinstance(value, Upload):
        if not value.data:
            raise _Invalid("the uploaded file is empty")
        return value
    try:
        form = classify_media(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    text = str(value).strip()
    if form == "data":
        match = _DATA_URI_RE.match(text)
        mime = (match.group("mime") or "") if match else ""
        family = _MEDIA_FAMILY.get(param.type)
        if family and mime and not mime.lower().startswith(family):
            raise _Invalid(f"the data: URI holds {mime}, not {param.type.value}")
    elif form == "path":
        if not allow_paths:
            raise _Invalid("local paths are not accepted here; give an http(s) URL or a data: URI")
        path = Path(text).expanduser()
        if not path.is_file():
            if path.exists():  # a folder, pipe, device or socket: never read (it may never end)
                raise _Invalid(f"is not a regular file: {text}")
            raise _Invalid(f"no such file: {text}")
        return str(path)
    return text


def _as_json(value: Any, coerce_text: bool) -> Any:
    if coerce_text and isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            raise _Invalid("is not valid JSON") from None
        except RecursionError:
            raise _Invalid("is JSON nested too deeply to read") from None
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        raise _Invalid("must be a JSON value") from None
    return value


def check_value(param: InputParam, value: Any, *, coerce_text: bool = True, allow_paths: bool = True) -> Any:
    """Coerce one present, non-null value to ``param``'s type and check its bounds and choices.

    Returns the coerced value; raises ``ValueError`` with a plain sentence (without the field name).
    """
    try:
        return _check(param, value, coerce_text, allow_paths)
    except _Invalid as exc:
        raise ValueError(exc.message) from None


def _check(param: InputParam, value: Any, coerce_text: bool, allow_paths: bool) -> Any:
    kind = param.type
    out: Any
    if kind in (ParamType.STRING, ParamType.TEXT):
        if param.accepts_url and ArtifactRef.is_ref(value):
            return value  # a media output mapped into a URL input: the service passes its URL
        out = _as_text(value, coerce_text)
    elif kind is ParamType.INTEGER:
        out = _as_int(value, coerce_text)
    elif kind is ParamType.SEED:
        out = _as_int(value, coerce_text)
        if out < 0:
            raise _Invalid(f"a seed must be 0 or more (got {out})")
    elif kind is ParamType.NUMBER:
        out = _as_number(value, coerce_text)
    elif kind is ParamType.BOOLEAN:
        out = _as_bool(value, coerce_text)
    elif kind is ParamType.ENUM:
        if not param.enum:
            raise _Invalid("has no allowed values in its definition")
        return _as_enum(param, value, coerce_text)
    elif kind.is_media:
        return _as_media(param, value, allow_paths)
    else:  # JSON
        out = _as_json(value, coerce_text)
    if param.enum and kind is not ParamType.JSON:
        out = _as_enum(param, out, coerce_text)
    if isinstance(out, int | float) and not isinstance(out, bool):
        if param.minimum is not None and out < param.minimum:
            raise _Invalid(f"must be at least {_num(param.minimum)} (got {out})")
        if param.maximum is not None and out > param.maximum:
            raise _Invalid(f"must be at most {_num(param.maximum)} (got {out})")
    return out


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _absent(param: InputParam, value: Any) -> bool:
    if value is None:
        return True
    # Chat text: an empty answer for a non-text field means "not given".
    return (
        isinstance(value, str) and not value.strip() and param.type not in (ParamType.STRING, ParamType.TEXT)
    )


def visibility(
    schema: list[InputParam], values: Mapping[str, Any], *, coerce_text: bool = True
) -> dict[str, bool]:
    """Which inputs are shown, by name: an input with ``visibleIf`` is visible when the input it
    names is itself visible and has (after coercion, defaults applied) one of the listed values.
    Every surface asks this one question (the inputs check, the web form, the chat bot)."""
    if all(p.visible_if is None for p in schema):  # most schemas: every input shown
        return dict.fromkeys([p.name for p in schema], True)
    params = {p.name: p for p in schema}
    memo: dict[str, bool] = {}

    def visible(name: str, path: tuple[str, ...]) -> bool:
        if name in memo:
            return memo[name]
        condition = params[name].visible_if
        if condition is None:
            result = True
        elif condition.field not in params or condition.field in path:
            result = True  # a definition that refers nowhere, or in a circle, is refused when registered
        else:
            control = params[condition.field]
            value = values.get(control.name)
            if _absent(control, value):
                value = control.default
            result = visible(control.name, (*path, name)) and _matches(control, value, condition.values, coerce_text)
        memo[name] = result
        return result

    return {name: visible(name, ()) for name in params}


def _matches(control: InputParam, value: Any, wanted: list[Any], coerce_text: bool) -> bool:
    if value is None:
        return False
    try:
        given = _check(control, value, coerce_text, True)
    except _Invalid:
        return False
    for option in wanted:
        try:
            if _check(control, option, True, True) == given:
                return True
        except _Invalid:
            if option == given:
                return True
    return False


def drawn_seeds(schema: list[InputParam], raw: Mapping[str, Any] | None) -> list[str]:
    """The seed inputs ``prepare_inputs`` draws at random for ``raw``: those left empty (or -1)."""
    given = dict(raw or {})
    return [
        p.name for p in schema
        if p.type is ParamType.SEED and (_absent(p, given.get(p.name)) or given.get(p.name) in (-1, "-1"))
    ]


def prepare_inputs(
    schema: list[InputParam],
    raw: Mapping[str, Any] | None,
    *,
    coerce_text: bool = True,
    allow_paths: bool = True,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Merge defaults, coerce, reject unknown fields and check bounds, choices and media forms.

    - a field that is absent (or null) takes its default; a required field without one is a problem;
      an optional one without a default is left out, so the tool's own default applies;
    - a ``seed`` that is absent (or ``-1``) gets a random value in ``0..SEED_MAX``;
    - ``allow_paths=False`` refuses local paths for media (for inputs from the network);
    - an input hidden by its ``visibleIf`` is left out: not demanded, and a value given is ignored.

    Returns the prepared inputs in schema order; raises ``InputError`` listing every problem.
    """
    raw = dict(raw or {})
    problems: list[FieldProblem] = []
    known = {p.name for p in schema}
    for name in raw:
        if name not in known:
            expected = ", ".join(p.name for p in schema) or "no fields"
            problems.append(FieldProblem(str(name), f"is not an input of this tool (expected: {expected})"))
    shown = visibility(schema, raw, coerce_text=coerce_text)
    out: dict[str, Any] = {}
    for param in schema:
        if not shown[param.name]:
            continue
        value = raw.get(param.name)
        if param.type is ParamType.SEED and (_absent(param, value) or value in (-1, "-1")):
            out[param.name] = (rng or _SEEDS).randint(0, SEED_MAX)
            continue
        if _absent(param, value):
            if param.default is not None:
                value = param.default
            elif param.required:
                problems.append(FieldProblem(param.name, "is required"))
                continue
            else:
                continue
        try:
            out[param.name] = _check(param, value, coerce_text, allow_paths)
        except _Invalid as exc:
            problems.append(FieldProblem(param.name, exc.message))
    if problems:
        raise InputError(problems)
    return out


DEFAULT_MAX_DEPTH = 32
"""How deeply lists and objects may nest inside one input value (setting ``input_max_depth``)."""
_MAX_STORABLE_PROBLEMS = 20


def field_name(key: Any) -> str:
    """A key as it can be shown in an error: lone surrogates and control characters escaped."""
    text = str(key)
    if text.isprintable():
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    return text.encode("utf-8", "backslashreplace").decode("utf-8").encode("unicode_escape").decode("ascii")


def text_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        return f"holds {bad.encode('utf-8', 'backslashreplace').decode()}, a lone surrogate that is not Unicode text"
    if "\x00" in text:
        return "holds a NUL character (U+0000), which cannot be stored"
    return None


def storable_problems(values: Mapping[str, Any], *, max_depth: int = DEFAULT_MAX_DEPTH, prefix: str = "") -> list[FieldProblem]:
    """What in a mapping of JSON values cannot be stored and read back: text with lone surrogates or
    NUL characters (keys too, and uploads' file names and types), NaN and infinite numbers, lists and objects nested deeper than
    ``max_depth`` inside one value. Each problem names its field (``images[0].caption``); at most
    20 are reported. Iterative: safe on any depth."""
    problems: list[FieldProblem] = []
    stack: list[tuple[str, Any, int]] = []
    for key, value in reversed(list(values.items())):
        name = f"{prefix}{field_name(key)}"
        if isinstance(key, str) and text_problem(key):
            problems.append(FieldProblem(name, f"the name {text_problem(key)}"))
            continue
        stack.append((name, value, 0))
    while stack and len(problems) < _MAX_STORABLE_PROBLEMS:
        where, item, depth = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                problems.append(FieldProblem(where, problem))
        elif isinstance(item, Upload):  # its file name and type are kept with the account's artifact
            problem = next(filter(None, (text_problem(t) for t in (item.filename, item.mime_type) if t)), None)
            if problem:
                problems.append(FieldProblem(where, f"the uploaded file's name or type {problem}"))
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append(FieldProblem(where, f"is {item!r}; only finite numbers can be stored (JSON has no NaN or Infinity)"))
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                problems.append(FieldProblem(where, f"is nested deeper than {max_depth} levels (the limit, setting input_max_depth)"))
                continue
            if isinstance(item, dict):
                for key, sub in reversed(list(item.items())):
                    path = f"{where}.{field_name(key)}"
                    if isinstance(key, str) and text_problem(key):
                        problems.append(FieldProblem(path, f"the key {text_problem(key)}"))
                    else:
                        stack.append((path, sub, depth + 1))
            else:
                stack.extend((f"{where}[{i}]", sub, depth + 1) for i, sub in reversed(list(enumerate(item))))
    return problems[:_MAX_STORABLE_PROBLEMS]


def strings_in(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every text inside a JSON value, with its path (``images[0].url``)."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            stack.extend((f"{where}.{field_name(k)}", v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(item))))


__all__ = [
    "SEED_MAX",
    "FieldProblem",
    "InputError",
    "Upload",
    "check_value",
    "classify_media",
    "field_name",
    "prepare_inputs",
    "storable_problems",
    "strings_in",
    "visibility",
]
