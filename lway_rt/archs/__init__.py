"""SR backbones and the registry that recognises them from a state dict."""

from lway_rt.archs.descriptor import ArchSpec, ModelDescriptor
from lway_rt.archs.registry import ARCHS, build, detect, from_state_dict, unwrap_state_dict

__all__ = ["ARCHS", "ArchSpec", "ModelDescriptor", "build", "detect", "from_state_dict", "unwrap_state_dict"]
