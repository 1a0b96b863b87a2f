"""Models from and to other tools' formats (`hf`: Hugging Face transformers folders)."""
