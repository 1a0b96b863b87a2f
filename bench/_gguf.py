"""A transformers Llama folder as a GGUF file for llama.cpp, written with the `gguf` package.

llama.cpp's own converter (``convert_hf_to_gguf.py``) ships with its source tree, not with the
`gguf` wheel, and it refuses a tokenizer it does not know by hash (bench folders carry a
placeholder word-level tokenizer, `_genai.save_placeholder_tokenizer`). This writes the same
tensors it writes for ``LlamaForCausalLM``: llama.cpp's names, fp32, and the rows of the query and
key projections permuted from transformers' rotate-half RoPE layout to GGML's interleaved pairs
(``LlamaModel.permute`` in the converter). The vocabulary is the placeholder's ``t0 .. tN`` as a
SentencePiece-style list; the benchmarks feed and read token ids, never text. The fp32 greedy
tokens equal to Nima's and CTranslate2's (bench/peers.py checks them) show the mapping is right.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """(heads * D, d_model) rows from rotate-half order (first half, second half of each head) to
    interleaved pairs, as llama.cpp's converter does."""
    rows = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, rows, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def llama_gguf(hf: Path, out: Path, eos: int) -> Path:
    """The Llama weights and config in ``hf`` as the fp32 GGUF file ``out``; ``eos`` ends, starts and
    pads. Returns ``out``."""
    config = json.loads((hf / "config.json").read_text())
    theta = config.get("rope_theta") or config.get("rope_parameters", {}).get("rope_theta", 10000.0)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    d_model, vocab = config["hidden_size"], config["vocab_size"]
    weights = load_file(str(hf / "model.safetensors"))
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(d_model)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(d_model // heads)
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"t{i}" for i in range(vocab)])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([gguf.TokenType.NORMAL] * vocab)
    writer.add_bos_token_id(eos)
    writer.add_eos_token_id(eos)
    writer.add_add_bos_token(False)
    names = {
        "self_attn.o_proj": "attn_output",
        "self_attn.v_proj": "attn_v",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        writer.add_tensor(f"blk.{layer}.attn_q.weight", _permute(weights[prefix + "self_attn.q_proj.weight"], heads))
        writer.add_tensor(f"blk.{layer}.attn_k.weight", _permute(weights[prefix + "self_attn.k_proj.weight"], kv_heads))
        for source, name in names.items():
            writer.add_tensor(f"blk.{layer}.{name}.weight", weights[f"{prefix}{source}.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    if "lm_head.weight" in weights and not config.get("tie_word_embeddings", False):
        writer.add_tensor("output.weight", weights["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
