"""convserve inference service: FastAPI + onnxruntime. Never imports TensorFlow."""

__version__ = "0.1.0"
