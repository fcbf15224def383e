"""Shared helpers for the integration and e2e tests (real apiserver, upstream CRDs)."""
