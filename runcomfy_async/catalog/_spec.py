"""One :class:`ModelSpec` per model: the only place where model knowledge lives.

A spec holds a model's input schema (validation reads it), its price rule
(cost estimates), its latency prior (the scheduler's first guess), the types
of its CSV columns (manifest coercion) and its audio switch. Specs come from
the schemas bundled with the package (Kling 3.0) and from RunComfy's live
model catalog; a :class:`Registry` looks them up by model id.

Rules a schema cannot say (a segment's durations adding up to the total)
are small named :class:`Rule` objects next to the spec they belong to.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

import attrs

from .._errors import InputValidationError, ValidationProblem
from ._schema import SchemaReport, apply_defaults, check_json, is_int, is_number, validate_value

__all__ = [
    "DEFAULT_REGISTRY",
    "LatencyPrior",
    "ModelSpec",
    "PriceRule",
    "Registry",
    "Rule",
    "csv_column_types",
    "get_spec",
    "latency_prior",
]

I2V_STANDARD: Final = "kling/kling-3.0/standard/image-to-video"
T2V_PRO: Final = "kling/kling-3.0/pro/text-to-video"
I2V_PRO: Final = "kling/kling-3.0/pro/image-to-video"
T2V_STANDARD: Final = "kling/kling-3.0/standard/text-to-video"

# Fields a per-output price multiplies by, in the order they are looked for.
_OUTPUT_COUNT_FIELDS: Final = ("num_outputs", "num_images", "num_videos", "batch_size", "n")
# Where the audio switch of a model is found when its spec does not say.
_AUDIO_FIELDS: Final = ("generate_audio", "sound", "audio", "with_audio")


@attrs.frozen
class PriceRule:
    """What one generation costs: ``usd`` per ``unit`` (``"second"`` or ``"output"``).

    ``usd_with_audio`` is the per-unit price when the model's audio switch is
    on (None: audio does not change the price). ``note`` is the catalog's
    pricing note, kept for display.
    """

    usd: float
    unit: str
    usd_with_audio: float | None = None
    note: str | None = None

    def __attrs_post_init__(self) -> None:
        for value in (self.usd, self.usd_with_audio):
            if value is not None and (
                not is_number(value) or not math.isfinite(value) or value < 0
            ):
                raise ValueError(f"a price must be a finite number >= 0, not {value!r}")

    @property
    def estimable(self) -> bool:
        """True when :meth:`ModelSpec.estimate_cost` can use this rule."""
        return self.unit in ("second", "output")


@attrs.frozen
class LatencyPrior:
    """Seconds a generation usually takes: ``low`` to ``high`` (public figures)."""

    low: float
    high: float


@attrs.frozen
class Rule:
    """A named rule the schema cannot state; ``check(spec, body)`` returns its problems."""

    name: str
    check: Callable[[ModelSpec, Mapping[str, Any]], list[ValidationProblem]] = attrs.field(
        repr=False
    )


def _freeze(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(schema))


@attrs.frozen
class ModelSpec:
    """Everything this package knows about one model.

    ``schema`` is the input schema (RunComfy's dialect, see
    :mod:`runcomfy_async.catalog._schema`); ``price``, ``latency`` and
    ``audio_field`` may be None when unknown; ``source`` says where the spec
    came from (``"bundled"``, ``"catalog"`` or ``"user"``).
    """

    model_id: str
    schema: Mapping[str, Any] = attrs.field(converter=_freeze, repr=False)
    price: PriceRule | None = None
    latency: LatencyPrior | None = None
    audio_field: str | None = None
    rules: tuple[Rule, ...] = ()
    display_name: str | None = None
    source: str = "user"

    def validate(
        self,
        payload: Any,
        *,
        allow_unknown_fields: bool = False,
        data_uri_limits: Mapping[str, int] | None = None,
        named_rules: bool = True,
        unknown_advice: str | None = None,
    ) -> list[ValidationProblem]:
        """Every problem with ``payload`` as this model's body; ``[]`` means valid.

        ``named_rules=False`` checks the schema alone, without :attr:`rules`.
        ``data_uri_limits`` replaces the per-kind size caps of ``data:`` URIs.
        ``unknown_advice`` replaces what an unknown field's problem suggests
        (by default the Python argument; the command line names its flag).
        """
        report = SchemaReport(
            allow_unknown=allow_unknown_fields,
            data_uri_limits=data_uri_limits,
            unknown_advice=unknown_advice,
        )
        if not isinstance(payload, Mapping):
            report.add("", payload, "must be an object (a mapping of field names)")
            return report.problems
        validate_value(self.schema, payload, "", report)
        problems = report.problems
        for rule in self.rules if named_rules else ():
            # each rule skips what has the wrong type: that is reported above
            problems += rule.check(self, payload)
        return problems

    def with_defaults(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``payload`` with the schema's defaults filled in for absent top-level fields."""
        return apply_defaults(self.schema, payload)

    def default(self, field: str) -> Any:
        """The schema default of top-level ``field`` (None when it has none)."""
        prop = self.properties.get(field)
        return prop.get("default") if isinstance(prop, Mapping) else None

    @property
    def properties(self) -> Mapping[str, Any]:
        """The schema's top-level properties (empty when it lists none)."""
        props = self.schema.get("properties")
        return props if isinstance(props, Mapping) else {}

    def csv_column_types(self) -> dict[str, str]:
        """How a CSV cell of each input field is read: ``int``, ``float``, ``bool``, ``json``.

        Fields missing from the result are text.
        """
        kinds = {"integer": "int", "number": "float", "float": "float", "boolean": "bool"}
        out: dict[str, str] = {}
        for name, prop in self.properties.items():
            if not isinstance(prop, Mapping):
                continue
            declared = prop.get("type")
            if declared in kinds:
                out[name] = kinds[declared]
            elif declared in ("array", "object"):
                out[name] = "json"
        return out

    def estimate_cost(self, payload: Mapping[str, Any]) -> float:
        """Estimated USD for one generation with ``payload`` (not validated here).

        Per-second prices multiply the ``duration`` (or its schema default);
        per-output prices the first count field present (``num_outputs``,
        ``num_images``, ...; else one output). Audio on (the payload's switch,
        its default, else on) uses the audio price. Raises ``LookupError``
        with no usable price, :class:`InputValidationError` without a usable
        duration for a per-second price.
        """
        price = self.price
        if price is None or not price.estimable:
            unit = f" per {price.unit}" if price is not None else ""
            raise LookupError(f"no per-second or per-output price known for {self.model_id}{unit}")
        body = self.with_defaults(payload)
        if price.unit == "second":
            units = body.get("duration")
            if not is_number(units) or not math.isfinite(units) or units < 0:
                raise InputValidationError(
                    [
                        ValidationProblem(
                            "duration",
                            payload.get("duration", attrs.NOTHING),
                            "must be a number of seconds (>= 0) to estimate the cost of this model",
                        )
                    ],
                    model_id=self.model_id,
                )
        else:
            counts = [body[f] for f in _OUTPUT_COUNT_FIELDS if is_int(body.get(f))]
            units = max(counts[0], 0) if counts else 1
        per_unit = price.usd
        if price.usd_with_audio is not None and self.audio_on(body):
            per_unit = price.usd_with_audio
        return round(float(units) * per_unit, 6)

    def audio_on(self, body: Mapping[str, Any]) -> bool:
        """Whether ``body`` asks for audio (absent switch: its default, else on)."""
        names = (self.audio_field,) if self.audio_field else _AUDIO_FIELDS
        for name in names:
            if isinstance(body.get(name), bool):
                return bool(body[name])
        for name in names:
            if isinstance(self.default(name), bool):
                return bool(self.default(name))
        return True


# -- named rules (what the Kling schemas say in words) -------------------------


def _prompts_not_blank(spec: ModelSpec, body: Mapping[str, Any]) -> list[ValidationProblem]:
    """An empty prompt is a string to the schema but buys a clip of nothing."""
    problems = []
    if isinstance(body.get("prompt"), str) and not body["prompt"].strip():
        problems.append(
            ValidationProblem("prompt", body["prompt"], "must not be empty or whitespace-only")
        )
    for i, seg in enumerate(body.get("multi_prompt") or ()):
        if isinstance(seg, Mapping):
            if "prompt" not in seg:
                # the schema lists no required item fields, but a segment without
                # a prompt has nothing to show
                problems.append(
                    ValidationProblem(f"multi_prompt[{i}].prompt", attrs.NOTHING, "is required")
                )
            elif isinstance(seg["prompt"], str) and not seg["prompt"].strip():
                problems.append(
                    ValidationProblem(
                        f"multi_prompt[{i}].prompt",
                        seg["prompt"],
                        "must not be empty or whitespace-only",
                    )
                )
    return problems


def _segments_add_up(spec: ModelSpec, body: Mapping[str, Any]) -> list[ValidationProblem]:
    """The schemas' words: segment durations must add up to the total duration.

    Reported at ``multi_prompt``. Since a segment lasts at least 3 s and the
    total at most 15 s, at most 5 segments can ever be valid, whatever the
    20-segment maximum says.
    """
    segments = body.get("multi_prompt")
    if not isinstance(segments, (list, tuple)) or not segments:
        return []
    total = body.get("duration", spec.default("duration"))
    item_schema = spec.properties.get("multi_prompt", {}).get("items", {})
    seg_default = item_schema.get("properties", {}).get("duration", {}).get("default")
    durations = [s.get("duration", seg_default) for s in segments if isinstance(s, Mapping)]
    if not is_int(total) or len(durations) != len(segments) or not all(map(is_int, durations)):
        return []
    if sum(durations) == total:
        return []
    which = "duration" if "duration" in body else "the default duration"
    return [
        ValidationProblem(
            "multi_prompt",
            durations,
            f"segment durations must add up to {which} ({total} s); they add up to "
            f"{sum(durations)} s",
        )
    ]


def _elements_not_empty(spec: ModelSpec, body: Mapping[str, Any]) -> list[ValidationProblem]:
    """An element is a reference asset, so one without any asset is a mistake."""
    problems = []
    for i, element in enumerate(body.get("elements") or ()):
        if isinstance(element, Mapping) and not (
            "frontal_image_url" in element
            or "video_url" in element
            or element.get("reference_image_urls")
        ):
            problems.append(
                ValidationProblem(
                    f"elements[{i}]",
                    element,
                    "needs frontal_image_url, reference_image_urls or video_url",
                )
            )
    return problems


PROMPTS_NOT_BLANK: Final = Rule("prompts_not_blank", _prompts_not_blank)
SEGMENTS_ADD_UP: Final = Rule("segments_add_up", _segments_add_up)
ELEMENTS_NOT_EMPTY: Final = Rule("elements_not_empty", _elements_not_empty)

_KLING_RULES: Final = (PROMPTS_NOT_BLANK, SEGMENTS_ADD_UP, ELEMENTS_NOT_EMPTY)


def _load_bundled(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath("schemas").joinpath(name).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def bundled_schema(model_id: str) -> dict[str, Any] | None:
    """The bundled schema file of ``model_id`` (a fresh copy), or None when none ships."""
    name = _BUNDLED_FILES.get(model_id)
    return _load_bundled(name) if name else None


_BUNDLED_FILES: Final[Mapping[str, str]] = {
    I2V_STANDARD: "kling-3.0-standard-image-to-video.input.json",
    T2V_PRO: "kling-3.0-pro-text-to-video.input.json",
}

# Public figures, late 2026 (USD per second without / with audio; seconds).
_STANDARD_PRICE: Final = PriceRule(0.084, "second", 0.126)
_PRO_PRICE: Final = PriceRule(0.112, "second", 0.168)
_STANDARD_LATENCY: Final = LatencyPrior(60.0, 120.0)
_PRO_LATENCY: Final = LatencyPrior(90.0, 200.0)


def _bundled_specs() -> dict[str, ModelSpec]:
    i2v = _load_bundled(_BUNDLED_FILES[I2V_STANDARD])
    t2v = _load_bundled(_BUNDLED_FILES[T2V_PRO])
    specs = [
        ModelSpec(I2V_STANDARD, i2v, _STANDARD_PRICE, _STANDARD_LATENCY, "generate_audio"),
        ModelSpec(T2V_PRO, t2v, _PRO_PRICE, _PRO_LATENCY, "sound"),
        # The other tier of each: the spec gives their prices and times, not
        # their schemas; the sibling's schema is the best guess, so validation
        # uses it, and the catalog's live schema replaces it when fetched.
        ModelSpec(I2V_PRO, i2v, _PRO_PRICE, _PRO_LATENCY, "generate_audio"),
        ModelSpec(T2V_STANDARD, t2v, _STANDARD_PRICE, _STANDARD_LATENCY, "sound"),
    ]
    return {
        s.model_id: attrs.evolve(s, rules=_KLING_RULES, source="bundled", display_name=None)
        for s in specs
    }


class Registry:
    """Model specs by id: bundled ones, plus those added (from the catalog or by hand).

    A registry may have a ``parent`` it falls back on: each client keeps its
    own registry over :data:`DEFAULT_REGISTRY`, so what one client fetched
    from the catalog does not leak into another.
    """

    __slots__ = ("_parent", "_specs")

    def __init__(self, specs: Iterable[ModelSpec] = (), *, parent: Registry | None = None):
        self._specs: dict[str, ModelSpec] = {s.model_id: s for s in specs}
        self._parent = parent

    def __repr__(self) -> str:
        return f"<Registry {len(self.model_ids())} models>"

    def get(self, model_id: str) -> ModelSpec | None:
        """The spec of ``model_id``, or None when neither this registry nor its parent has one."""
        spec = self._specs.get(model_id)
        if spec is None and self._parent is not None:
            return self._parent.get(model_id)
        return spec

    def __contains__(self, model_id: object) -> bool:
        return isinstance(model_id, str) and self.get(model_id) is not None

    def add(self, spec: ModelSpec) -> None:
        """Add ``spec``, replacing one of the same id in this registry (not in the parent)."""
        self._specs[spec.model_id] = spec

    def model_ids(self) -> frozenset[str]:
        """Every model id known here or in the parent."""
        own = frozenset(self._specs)
        return own | self._parent.model_ids() if self._parent is not None else own


DEFAULT_REGISTRY: Final = Registry(_bundled_specs().values())
"""The specs bundled with the package: Kling 3.0 standard and pro, image- and text-to-video."""


def get_spec(model_id: str, registry: Registry | None = None) -> ModelSpec | None:
    """The spec of ``model_id`` in ``registry`` (default: the bundled one)."""
    return (registry or DEFAULT_REGISTRY).get(model_id)


def latency_prior(model_id: str, registry: Registry | None = None) -> float | None:
    """Seconds before which a job of ``model_id`` is unlikely done (None: no prior).

    The low end of the spec's latency figures: being early costs a check,
    being late costs detection lag. For the scheduler's priors.
    """
    spec = get_spec(model_id, registry)
    return spec.latency.low if spec is not None and spec.latency is not None else None


def csv_column_types(model_id: str, registry: Registry | None = None) -> dict[str, str]:
    """How CSV cells of ``model_id``'s fields are read: ``int``, ``float``, ``bool``, ``json``.

    Empty for a model without a spec: every cell stays text.
    """
    spec = get_spec(model_id, registry)
    return spec.csv_column_types() if spec is not None else {}


def check_body_json(payload: Any) -> list[ValidationProblem]:
    """What every body needs to be sent at all: a mapping with string keys and JSON values."""
    report = SchemaReport()
    if isinstance(payload, Mapping):
        check_json("", payload, report)
    else:
        report.add("", payload, "must be an object (a mapping of field names)")
    return report.problems
