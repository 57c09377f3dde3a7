"""The GGUF layout of a LLaMa, as llama.cpp's Hugging Face converter
writes it, for the reference scripts gen_gguf.py and gen_gguf_smollm2.py.

Tensor names: Hugging Face model.layers.N.self_attn.q_proj.weight is GGUF
blk.N.attn_q.weight, and so on (TENSOR_NAMES). GGUF lists dimensions
innermost first, so a PyTorch [out, in] matrix has ne = [in, out]; the
bytes are the same row-major rows.

RoPE order: Hugging Face's rotate_half rotates coordinate i of a head of
size hd with coordinate i + hd/2; llama.cpp's RoPE rotates 2i with 2i + 1.
The converter therefore stores the q and k rows of each head reordered:
GGUF row 2i + j of a head is Hugging Face row j * hd/2 + i (j = 0, 1).
Written here from that statement with index arrays.
"""
import numpy as np

LAYER_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_name(hf):
    """The GGUF name of a Hugging Face LLaMa tensor name."""
    if hf in GLOBAL_NAMES:
        return GLOBAL_NAMES[hf]
    parts = hf.split(".")
    assert parts[0] == "model" and parts[1] == "layers" and parts[-1] == "weight", hf
    return f"blk.{parts[2]}.{LAYER_NAMES['.'.join(parts[3:-1])]}.weight"


def hf_name(gguf):
    """The inverse of gguf_name."""
    for hf, g in GLOBAL_NAMES.items():
        if g == gguf:
            return hf
    parts = gguf.split(".")
    assert parts[0] == "blk" and parts[-1] == "weight", gguf
    inverse = {v: k for k, v in LAYER_NAMES.items()}
    return f"model.layers.{parts[1]}.{inverse['.'.join(parts[2:-1])]}.weight"


def gguf_rows_from_hf(heads, hd):
    """src such that gguf_matrix = hf_matrix[src]: GGUF row h*hd + 2i + j
    holds Hugging Face row h*hd + j*hd/2 + i."""
    src = np.empty(heads * hd, dtype=np.int64)
    for h in range(heads):
        for i in range(hd // 2):
            for j in range(2):
                src[h * hd + 2 * i + j] = h * hd + j * (hd // 2) + i
    return src


def hf_rows_from_gguf(heads, hd):
    """src such that hf_matrix = gguf_matrix[src] (the inverse)."""
    src = np.empty(heads * hd, dtype=np.int64)
    for h in range(heads):
        for i in range(hd // 2):
            for j in range(2):
                src[h * hd + j * (hd // 2) + i] = h * hd + 2 * i + j
    return src
