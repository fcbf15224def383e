"""Time-series models for sensor streams beside the cameras: a generator of labelled sensor data, the
anomaly detector (LSTM autoencoder fused with an IsolationForest) and the forecasters (LSTM, Transformer),
each trained, calibrated and exported as one ONNX graph the predictor serves as it is."""
