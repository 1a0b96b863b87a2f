"""Spec -> PyTorch modules. Only `build.py` reads specs; the modules take plain numbers."""

from nima.builders.build import build_model
from nima.builders.models import DecoderLM, EncoderDecoderLM
from nima.builders.weights import load_weights, save_build

__all__ = ["DecoderLM", "EncoderDecoderLM", "build_model", "load_weights", "save_build"]
