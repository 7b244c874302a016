"""Model knowledge in one place: a :class:`ModelSpec` per model, and RunComfy's live catalog.

- :class:`ModelSpec`: a model's input schema, price rule, latency prior, CSV
  column types and audio switch; :meth:`ModelSpec.validate` interprets the
  schema itself, plus the small named :class:`Rule` objects a schema cannot say;
- :class:`Registry`, :data:`DEFAULT_REGISTRY`, :func:`get_spec`: specs by
  model id (bundled Kling 3.0 specs; each client adds what its catalog fetched);
- :func:`latency_prior`, :func:`csv_column_types`: what the scheduler and the
  manifest read from a spec;
- :class:`ModelsClient`, :class:`ModelInfo`: the catalog (``client.models``).
"""

from ._client import ModelInfo, ModelsClient
from ._schema import DATA_URI_MAX_BYTES, MEDIA_FORMATS, MediaField, media_field, uri_problem
from ._spec import (
    DEFAULT_REGISTRY,
    LatencyPrior,
    ModelSpec,
    PriceRule,
    Registry,
    Rule,
    bundled_schema,
    csv_column_types,
    get_spec,
    latency_prior,
)

__all__ = [
    "DATA_URI_MAX_BYTES",
    "DEFAULT_REGISTRY",
    "MEDIA_FORMATS",
    "LatencyPrior",
    "MediaField",
    "ModelInfo",
    "ModelSpec",
    "ModelsClient",
    "PriceRule",
    "Registry",
    "Rule",
    "bundled_schema",
    "csv_column_types",
    "get_spec",
    "latency_prior",
    "media_field",
    "uri_problem",
]
