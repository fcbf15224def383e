"""The `vss` command a person types: `vss run` (serve a VSSModel on this machine), `vss render` and `vss crd`
(print what the operator would apply), `vss operator` (run the operator), `vss models` (build the shipped
models). It sits above the planes and may import any of them; no plane imports it."""
