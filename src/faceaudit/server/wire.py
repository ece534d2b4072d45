"""AWS JSON 1.1 on the wire, driven by botocore service models: Rekognition's and faceaudit's own.

A request is ``POST /`` with ``X-Amz-Target: <TargetPrefix>.<Operation>`` and a JSON
body; the answer is JSON, or an error as ``{"__type": <code>, ...}`` with a 4xx/5xx
status.  Everything this module knows about the operations -- their names, member
names, types and constraints -- comes from machine-readable service models:

* Rekognition's (``RekognitionService.*``), the one that ships inside botocore (the same
  file boto3 uses to build its client), so an operation the service adds later needs no
  change here;
* faceaudit's own (``FaceAuditService.*``: blind review), ``models/faceaudit/2026-12-01/
  service-2.json`` beside this module, in the same format. Clients load it the same way:
  ``faceaudit.client_model_path()`` is the folder to put on botocore's data path
  (docs/accountability.md, "Blind review").

One :class:`JsonProtocol` serves both: the target's prefix picks the model, and the
same decoder, validator and encoder run for either.  It turns

* a request body into the Python dict the service takes (blobs
  base64-decoded to ``bytes``, timestamps to aware ``datetime``), validating it
  against the operation's input shape on the way: the checks a Rekognition
  endpoint makes and botocore's client-side validation does not (maxima,
  patterns, enums, ...), so a boto3 user gets the same error from faceaudit as
  from Amazon;
* a response dict into the JSON body boto3 parses (bytes -> base64, datetime ->
  epoch seconds, ``None`` dropped);
* a :class:`~faceaudit.errors.RekognitionError` into status + error body.

Error names (and where they come from):

* Constraint violations (missing required member, unknown member, length,
  range, pattern, enum) -> ``InvalidParameterException``, with a message in
  the format AWS's JSON services use: ``1 validation error detected: Value
  '5000' at 'maxFaces' failed to satisfy constraint: Member must have value
  less than or equal to 4096`` (format seen in e.g. cisagov/crossfeed#374).
* An image blob over its maximum (shape ``ImageBlob``, 5 MB) ->
  ``ImageTooLargeException``, as Rekognition answers a too-large image.
* A body that is not JSON, or JSON whose values have the wrong type for the
  shape (a string where a number belongs, invalid base64, ...) ->
  ``SerializationException``: what AWS JSON 1.1 services answer when the body
  cannot be deserialised into the input shape (e.g. Cognito answers a boolean
  sent for a string with it, amazon-archives/amazon-cognito-identity-js#485).
  botocore checks types on the client, so boto3 users never see this one.
* No or an unknown ``X-Amz-Target`` -> ``UnknownOperationException`` (AWS
  JSON services' name for it).

``SerializationException`` and ``UnknownOperationException`` are defined here
(they belong to the protocol, not to Rekognition's own model).
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from botocore.loaders import Loader
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StringShape, StructureShape

from faceaudit.errors import (
    ImageTooLargeException,
    InvalidParameterException,
    RekognitionError,
    SerializationException,
    UnknownOperationException,
)

__all__ = [
    "CONTENT_TYPE",
    "FACEAUDIT_TARGET_PREFIX",
    "MODELS_DIR",
    "REKOGNITION_TARGET_PREFIX",
    "JsonProtocol",
    "RekognitionProtocol",
    "SerializationException",
    "UnknownOperationException",
    "faceaudit_service_model",
]

CONTENT_TYPE = "application/x-amz-json-1.1"
REKOGNITION_TARGET_PREFIX = "RekognitionService"
FACEAUDIT_TARGET_PREFIX = "FaceAuditService"
# botocore's data layout (<service>/<api version>/service-2.json), so a client's loader can read it too.
MODELS_DIR = Path(__file__).resolve().parent / "models"
# Blob shapes whose maximum is an *image* size limit: exceeding it is
# ImageTooLargeException (Rekognition's answer), not a validation error.
IMAGE_BLOB_SHAPES = frozenset({"ImageBlob"})
_MAX_ERRORS_SHOWN = 10  # validation messages listed in one error
_MAX_VALUE_SHOWN = 80  # characters of an offending value echoed back


# --------------------------------------------------------------------------- helpers


def _member_path(parent: str, name: str) -> str:
    """AWS's validation paths: member names with a lower-case first letter, dotted."""
    name = name[:1].lower() + name[1:]
    return f"{parent}.{name}" if parent else name


def _show(value: Any) -> str:
    """An offending value, as AWS echoes it (strings and numbers quoted), kept short."""
    if isinstance(value, (bytes, bytearray)):
        text = f"<{len(value)} bytes>"
    elif isinstance(value, list):  # only the head: the list may be millions long
        head = value[:_MAX_VALUE_SHOWN]
        text = "[" + ", ".join(str(v)[:_MAX_VALUE_SHOWN] for v in head) + "]"
        if len(value) > len(head):
            text = text[:-1] + ", ...]"
    else:
        text = str(value)
    if len(text) > _MAX_VALUE_SHOWN:
        text = text[:_MAX_VALUE_SHOWN] + "..."
    return f"'{text}'"


def _fmt_number(value: float | int) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_JAVA_CLASS_ESCAPES = {r"\p{L}": r"\w", r"\p{N}": r"\d", r"\p{Z}": r"\s"}


@functools.lru_cache(maxsize=256)
def _compile_pattern(pattern: str) -> re.Pattern | None:
    """The model's (Java) regex as a Python one; ``None`` if it cannot be translated.

    Two of Rekognition's patterns (tag keys and values) use Unicode property
    classes, which Python's ``re`` lacks; inside their character classes
    ``\\w``/``\\d``/``\\s`` are close enough (letters, digits, separators).
    """
    for java, python in _JAVA_CLASS_ESCAPES.items():
        pattern = pattern.replace(java, python)
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _float_from_json(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))  # botocore's encoding of non-finite floats
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# --------------------------------------------------------------------------- decoding


class _Decoder:
    """One request body -> Python dict, collecting constraint violations."""

    def __init__(self) -> None:
        self.violations: list[str] = []  # the first _MAX_ERRORS_SHOWN, formatted
        self.count = 0  # all of them
        self.too_large: ImageTooLargeException | None = None

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.violations) < _MAX_ERRORS_SHOWN:
            self.violations.append(message)

    def violation(self, path: str, value: Any, constraint: str) -> None:
        self.count += 1
        if len(self.violations) >= _MAX_ERRORS_SHOWN:
            return  # counted, not formatted: formatting is the expensive part
        shown = "null" if value is None else _show(value)
        self.violations.append(
            f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}")

    def wrong_type(self, path: str, value: Any, expected: str) -> SerializationException:
        where = f" at '{path}'" if path else ""
        return SerializationException(
            f"Expected {expected}{where}, but got a JSON {_json_type(value)}")

    def decode(self, shape: Shape, value: Any, path: str) -> Any:
        # botocore builds each container and string shape as its subclass (ShapeResolver), which
        # is what the _decode_structure/list/map/string handlers below are typed with.
        handler = getattr(self, f"_decode_{shape.type_name}", None)
        if handler is None:  # a type this model does not use today: pass it on untouched
            return value
        return handler(shape, value, path)

    # containers ----------------------------------------------------------------
    def _decode_structure(self, shape: StructureShape, value: Any, path: str) -> Any:
        if getattr(shape, "is_document_type", False):
            return value
        if not isinstance(value, dict):
            raise self.wrong_type(path, value, f"a JSON object ({shape.name})")
        members = shape.members
        out: dict[str, Any] = {}
        for name, item in value.items():
            if item is None:  # JSON null is how absent members may be written
                continue
            member = members.get(name)
            if member is None:
                where = f" in '{path}'" if path else ""
                self.add(f"Unknown parameter '{name}'{where}; valid parameters are: "
                         + ", ".join(members))
                continue
            out[name] = self.decode(member, item, _member_path(path, name))
        for name in shape.required_members:
            if name not in out:
                self.violation(_member_path(path, name), None, "Member must not be null")
        return out

    def _decode_list(self, shape: ListShape, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise self.wrong_type(path, value, "a JSON array")
        if not self._check_length(shape, value, len(value), path, "length"):
            return value  # over its bound: its elements are not looked at (could be millions)
        return [self.decode(shape.member, item, f"{path}.{i + 1}.member")
                for i, item in enumerate(value)]

    def _decode_map(self, shape: MapShape, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise self.wrong_type(path, value, "a JSON object (map)")
        if not self._check_length(shape, value, len(value), path, "length"):
            return value
        return {self.decode(shape.key, key, f"{path}.key"):
                self.decode(shape.value, item, f"{path}.{key}") for key, item in value.items()}

    # scalars -------------------------------------------------------------------
    def _decode_string(self, shape: StringShape, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise self.wrong_type(path, value, "a string")
        meta = shape.metadata
        if shape.enum and value not in shape.enum:
            self.violation(path, value,
                           "Member must satisfy enum value set: [" + ", ".join(shape.enum) + "]")
            return value
        self._check_length(shape, value, len(value), path, "length")
        pattern = meta.get("pattern")
        if pattern is not None:
            compiled = _compile_pattern(pattern)
            if compiled is not None and compiled.fullmatch(value) is None:
                self.violation(path, value,
                               f"Member must satisfy regular expression pattern: {pattern}")
        return value

    def _decode_integer(self, shape: Shape, value: Any, path: str) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong_type(path, value, "an integer")
        self._check_range(shape, value, path)
        return value

    _decode_long = _decode_integer

    def _decode_float(self, shape: Shape, value: Any, path: str) -> Any:
        number = _float_from_json(value)
        if number is None:
            raise self.wrong_type(path, value, "a number")
        self._check_range(shape, number, path, shown=value)
        return number

    _decode_double = _decode_float

    def _decode_boolean(self, shape: Shape, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise self.wrong_type(path, value, "a boolean")
        return value

    def _decode_blob(self, shape: Shape, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise self.wrong_type(path, value, "base64-encoded binary data (a string)")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise SerializationException(
                f"Value at '{path}' is not valid base64-encoded binary data") from None
        maximum = shape.metadata.get("max")
        if shape.name in IMAGE_BLOB_SHAPES and maximum is not None and len(data) > maximum:
            if self.too_large is None:
                self.too_large = ImageTooLargeException(
                    f"Image at '{path}' is {len(data)} bytes; the limit is {maximum} bytes "
                    f"({maximum / 2 ** 20:g} MB)")
            return data
        self._check_length(shape, data, len(data), path, "length")
        return data

    def _decode_timestamp(self, shape: Shape, value: Any, path: str) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            try:
                return datetime.fromtimestamp(value, tz=UTC)
            except (OverflowError, OSError, ValueError):
                pass
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            except ValueError:
                pass
        raise self.wrong_type(path, value, "a timestamp (epoch seconds)")

    # constraints ---------------------------------------------------------------
    def _check_length(self, shape: Shape, value: Any, size: int, path: str, what: str) -> bool:
        """Record length violations; False when ``size`` is over the maximum."""
        meta = shape.metadata
        if "min" in meta and size < meta["min"]:
            self.violation(path, value, f"Member must have {what} greater than or equal to "
                                        f"{_fmt_number(meta['min'])}")
        if "max" in meta and size > meta["max"]:
            self.violation(path, value, f"Member must have {what} less than or equal to "
                                        f"{_fmt_number(meta['max'])}")
            return False
        return True

    def _check_range(self, shape: Shape, value: float | int, path: str, shown: Any = None) -> None:
        meta = shape.metadata
        shown = value if shown is None else shown  # as the client wrote it
        nan = isinstance(value, float) and math.isnan(value)
        if "min" in meta and (nan or value < meta["min"]):
            self.violation(path, shown, "Member must have value greater than or equal to "
                                        f"{_fmt_number(meta['min'])}")
        if "max" in meta and (nan or value > meta["max"]):
            self.violation(path, shown, "Member must have value less than or equal to "
                                        f"{_fmt_number(meta['max'])}")


def validation_message(violations: list[str], count: int | None = None) -> str:
    """AWS's summary: ``N validation error(s) detected: <first>; <second>; ...``.

    ``count`` is the total when only the first violations were formatted.
    """
    n = len(violations) if count is None else count
    shown = violations[:_MAX_ERRORS_SHOWN]
    more = f"; and {n - len(shown)} more" if n > len(shown) else ""
    return (f"{n} validation error{'s' if n != 1 else ''} detected: "
            + "; ".join(shown) + more)


# --------------------------------------------------------------------------- encoding


def _epoch(value: datetime | date) -> float | int:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = value.timestamp()
    return int(seconds) if seconds.is_integer() else seconds


def _plain(value: Any) -> Any:
    """numpy scalars and enums as the Python values they hold."""
    if isinstance(value, enum.Enum):
        return value.value
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, (bytes, bytearray, str)) and callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


def _encode_float(value: Any) -> Any:
    value = float(_plain(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _encode_any(value: Any) -> Any:
    """A value the output shape does not describe: plain JSON, same conventions."""
    value = _plain(value)
    if isinstance(value, Mapping):
        return {str(k): _encode_any(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_encode_any(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime, date)):
        return _epoch(value)
    if isinstance(value, float):
        return _encode_float(value)
    return value


def _encode(shape: Shape | None, value: Any) -> Any:
    value = _plain(value)
    if shape is None:
        return _encode_any(value)
    kind = shape.type_name
    # botocore builds "structure", "list" and "map" shapes as these subclasses (ShapeResolver)
    if isinstance(shape, StructureShape) and isinstance(value, Mapping):
        if getattr(shape, "is_document_type", False):
            return _encode_any(value)
        members = shape.members
        return {name: _encode(members.get(name), item)
                for name, item in value.items() if item is not None}
    if isinstance(shape, ListShape) and isinstance(value, (list, tuple)):
        return [_encode(shape.member, item) for item in value]
    if isinstance(shape, MapShape) and isinstance(value, Mapping):
        return {str(k): _encode(shape.value, v) for k, v in value.items() if v is not None}
    if kind == "timestamp" and isinstance(value, (datetime, date)):
        return _epoch(value)
    if kind in ("float", "double") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _encode_float(value)
    if kind in ("integer", "long") and isinstance(value, float) and value.is_integer():
        return int(value)
    return _encode_any(value)


# --------------------------------------------------------------------------- protocol


def faceaudit_service_model() -> ServiceModel:
    """faceaudit's own operations (FaceAuditService.*), loaded as botocore loads any model."""
    loader = Loader(extra_search_paths=[str(MODELS_DIR)], include_default_search_paths=False)
    return ServiceModel(loader.load_service_model("faceaudit", "service-2"), service_name="faceaudit")


def rekognition_service_model() -> ServiceModel:
    """Rekognition's model, as it ships inside botocore."""
    return ServiceModel(Loader().load_service_model("rekognition", "service-2"), service_name="rekognition")


class JsonProtocol:
    """AWS JSON 1.1 for one or more service models, told apart by their ``targetPrefix``.

    The first model is the primary one (``model``, ``target_prefix``, ``operation_names``:
    Rekognition's in the server); the target's prefix picks the model of each request.
    """

    def __init__(self, *service_models: ServiceModel):
        if not service_models:
            service_models = (rekognition_service_model(),)
        self.models: dict[str, ServiceModel] = {}
        for service_model in service_models:
            prefix = service_model.metadata["targetPrefix"]
            if prefix in self.models:
                raise ValueError(f"two service models share the target prefix {prefix!r}")
            self.models[prefix] = service_model
        self.model = service_models[0]
        self.target_prefix: str = self.model.metadata["targetPrefix"]  # "RekognitionService"
        self.operation_names = frozenset(self.model.operation_names)
        self._operations = {prefix: frozenset(m.operation_names) for prefix, m in self.models.items()}
        self._modeled_errors = frozenset(s.name for m in self.models.values() for s in m.error_shapes)

    @classmethod
    @functools.lru_cache(maxsize=1)
    def default(cls) -> JsonProtocol:
        """One shared instance for Rekognition's operations and faceaudit's (loading takes ~50 ms)."""
        return cls(rekognition_service_model(), faceaudit_service_model())

    @staticmethod
    def target_prefix_of(operation: OperationModel) -> str:
        """Which service an operation belongs to: its model's ``targetPrefix``."""
        return str(operation.service_model.metadata["targetPrefix"])

    # -- requests ---------------------------------------------------------------------
    def operation(self, target: str | None) -> OperationModel:
        """The operation an ``X-Amz-Target`` header names; UnknownOperationException if none."""
        if not target:
            raise UnknownOperationException(
                "Missing X-Amz-Target header; expected "
                f"'{self.target_prefix}.<Operation>', e.g. '{self.target_prefix}.DetectFaces'")
        prefix, dot, name = target.partition(".")
        if not dot or name not in self._operations.get(prefix, ()):
            shown = target if len(target) <= 120 else target[:120] + "..."
            raise UnknownOperationException(f"Unknown operation '{shown}'")
        return self.models[prefix].operation_model(name)

    def decode_request(self, operation: OperationModel, body: bytes) -> dict[str, Any]:
        """The body as the dict the service takes, validated against the operation's input shape."""
        try:
            text = body.decode("utf-8") if body else "{}"
            value = json.loads(text) if text.strip() else {}
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise SerializationException(f"The request body is not valid JSON: {exc}") from None
        shape = operation.input_shape
        if shape is None:
            if not isinstance(value, dict):
                raise SerializationException("The request body must be a JSON object")
            return {}
        decoder = _Decoder()
        try:
            request = decoder.decode(shape, value, "")
        except RecursionError:
            raise SerializationException("The request body is nested too deeply") from None
        if decoder.too_large is not None:
            raise decoder.too_large
        if decoder.count:
            raise InvalidParameterException(validation_message(decoder.violations, decoder.count))
        return request

    # -- responses --------------------------------------------------------------------
    def encode_response(self, operation: OperationModel, response: Mapping[str, Any] | None) -> bytes:
        """The JSON body for a successful call (members the model lacks are kept, plainly encoded)."""
        encoded = _encode(operation.output_shape, response or {})
        return json.dumps(encoded, separators=(",", ":"), allow_nan=False).encode("utf-8")

    def encode_error(self, error: RekognitionError) -> tuple[int, bytes]:
        """(HTTP status, JSON body) for an error.

        botocore reads the code from ``__type`` and the message from ``message``
        or ``Message``.  The models' own errors are written as
        Rekognition writes them, ``{"__type", "Code", "Message"}``; the
        protocol's and authentication errors as AWS's front end writes them,
        ``{"__type", "message"}``.
        """
        code = error.code
        message = getattr(error, "message", None) or str(error)
        if code in self._modeled_errors:
            body = {"__type": code, "Code": code, "Message": message}
        else:
            body = {"__type": code, "message": message}
        return error.http_status, json.dumps(body, separators=(",", ":")).encode("utf-8")


# The name from before the protocol served faceaudit's own model as well.
RekognitionProtocol = JsonProtocol
