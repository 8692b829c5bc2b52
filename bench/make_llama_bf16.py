#!/usr/bin/env python3
"""Writes a Llama-shaped BF16 checkpoint of random weights for bench/read-bench (cached; skipped when present).

Shape: hidden 2048, intermediate 5632, 19 layers, 32 heads / 4 KV heads, vocab 32000, untied head:
~967M parameters, ~1.93 GB of BF16 in 1 GB shards with model.safetensors.index.json, as save_pretrained lays out.
Values are N(0, 0.02) rounded to BF16 (ml_dtypes), so every bit pattern is an ordinary finite weight.

Usage: python3 bench/make_llama_bf16.py OUT_DIR
"""
import json
import pathlib
import sys

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

H, I, L, V, HEADS, KV = 2048, 5632, 19, 32000, 32, 4
HEAD_DIM = H // HEADS


def shapes():
    yield "model.embed_tokens.weight", (V, H)
    for i in range(L):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (H,)
        yield p + "self_attn.q_proj.weight", (H, H)
        yield p + "self_attn.k_proj.weight", (KV * HEAD_DIM, H)
        yield p + "self_attn.v_proj.weight", (KV * HEAD_DIM, H)
        yield p + "self_attn.o_proj.weight", (H, H)
        yield p + "post_attention_layernorm.weight", (H,)
        yield p + "mlp.gate_proj.weight", (I, H)
        yield p + "mlp.up_proj.weight", (I, H)
        yield p + "mlp.down_proj.weight", (H, I)
    yield "model.norm.weight", (H,)
    yield "lm_head.weight", (V, H)


def main(out: pathlib.Path) -> None:
    if (out / "model.safetensors.index.json").exists():
        print(f"{out}: present, reusing")
        return
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    # One random block reused with per-tensor offsets keeps generation fast; values still differ per tensor.
    pool = (rng.standard_normal(1 << 24, dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16)
    items = list(shapes())
    limit = 1_000_000_000
    shards, current, size = [], [], 0
    for name, shape in items:
        n = int(np.prod(shape)) * 2
        if current and size + n > limit:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += n
    shards.append(current)
    weight_map, total = {}, 0
    for si, shard in enumerate(shards):
        fname = f"model-{si + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for ti, (name, shape) in enumerate(shard):
            n = int(np.prod(shape))
            start = (ti * 7919) % (1 << 22)
            reps = -(-(start + n) // pool.size)
            src = np.tile(pool, reps) if reps > 1 else pool
            tensors[name] = src[start:start + n].reshape(shape).copy()
            weight_map[name] = fname
            total += n * 2
        save_file(tensors, str(tmp / fname), metadata={"format": "pt"})
        print(f"wrote {fname}: {len(shard)} tensors", flush=True)
        del tensors
    (tmp / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (tmp / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
        "num_hidden_layers": L, "num_attention_heads": HEADS, "num_key_value_heads": KV, "vocab_size": V,
        "torch_dtype": "bfloat16", "tie_word_embeddings": False}, indent=2))
    tmp.rename(out)
    print(f"{out}: {sum(int(np.prod(s)) for _, s in items) / 1e6:.0f}M parameters, {total / 1e9:.2f} GB")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
