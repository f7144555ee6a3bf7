"""lway_rt: adapt pretrained super-resolution networks to real low-resolution images (LWay,
CVPR 2024) and deploy them with ONNX Runtime or TensorRT.

Importing the package is cheap on purpose: nothing here imports onnx, onnxruntime, tensorrt or the
training code. Submodules are imported where they are used.
"""

from importlib.metadata import PackageNotFoundError, version

from lway_rt.errors import LwayError

try:
    __version__ = version("lway_rt")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"

__all__ = ["LwayError", "__version__"]
