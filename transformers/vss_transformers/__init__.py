"""Per-task pre/post-processing and the KServe transformer model."""
