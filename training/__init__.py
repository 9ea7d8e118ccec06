"""convserve offline training: image folder -> Keras CNN -> verified ONNX bundle."""
