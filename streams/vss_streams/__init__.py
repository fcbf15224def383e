"""The stream worker: video in, tracked objects and line/zone events out (VSSStream)."""
