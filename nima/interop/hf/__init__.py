"""Hugging Face transformers folders: `nima import` (a checkpoint becomes a Nima spec and weights) and back.

`architectures` holds one row per ``config.json`` ``model_type``: how its config becomes a spec,
and where each Nima weight comes from in its checkpoint. Nothing in a folder is ever executed:
configs that ask for custom code are refused, and only safetensors weights are read.
"""
