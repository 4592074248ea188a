"""modelpress: shrink trained PyTorch models and ship them to real runtimes.

Importing the package is cheap and pulls in no runtime (onnxruntime, LiteRT, TensorRT); each
backend is imported inside the functions that use it.
"""

__version__ = "0.1.0"
