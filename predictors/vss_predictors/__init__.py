"""Predictor runtimes (ONNX Runtime, TorchScript), dynamic batching and the KServe predictor model."""
