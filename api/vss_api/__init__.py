"""The contract between the planes of VSS Serving: what the operator, the predictor and the transformer
(and later the stream worker) must agree on, and nothing else.

- `vssmodel`: the VSSModel resource (schema, validation, status vocabulary).
- `serving_flags`: the command lines of the serving containers, rendered by the operator and parsed by them.
- `v2`: Open Inference Protocol datatypes and the array type.
- `metrics`: serving metric names, labels and label values, and their prometheus-client exporters.
- `errors`: data-plane errors and their HTTP/gRPC status.
- `server`: the KServe `ModelServer` bootstrap both serving processes share.

Every plane imports this package and never another plane (tests/unit/test_layering.py). `vssmodel`,
`serving_flags` and the names in `metrics` need only pydantic, PyYAML and prometheus-client, so the operator
image carries no serving stack; `v2`, `errors` and `server` need the `serving` extra."""
