"""A clean-room, readable Llama 3.2 Vision that computes what Meta's reference computes."""

from .args import PRESETS, SHAPE_LETTERS, SHAPE_PRODUCTS, ConfigError, ModelArgs, from_params_json, get_preset
from .build import build_model, init_random_weights
from .checkpoint import CheckpointError, load_checkpoint
from .chat_format import ChatFormat, LLMInput, Message, VisionInput, create_vision_mask
from .multimodal import CrossAttentionTransformer
from .tokenizer import Tokenizer, get_tokenizer

__all__ = [
    "PRESETS", "SHAPE_LETTERS", "SHAPE_PRODUCTS", "ConfigError", "ModelArgs", "from_params_json", "get_preset",
    "build_model", "init_random_weights", "CheckpointError", "load_checkpoint",
    "ChatFormat", "LLMInput", "Message", "VisionInput", "create_vision_mask",
    "CrossAttentionTransformer", "Tokenizer", "get_tokenizer",
]
