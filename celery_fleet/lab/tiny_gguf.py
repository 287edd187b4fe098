"""A real llama-architecture model in a GGUF file, with random weights, written with the `gguf`
package: what the lab's llama.cpp server loads and runs (tests/lab/test_inference.py, the
inference benchmark). Nothing of llama.cpp is faked: only the weights are not trained.

    python -m celery_fleet.lab.tiny_gguf OUT.gguf [--size tiny|bench]

The vocabulary is SentencePiece-style (tokenizer.ggml.model "llama"): the control tokens, 256
byte tokens (any text tokenizes) and a few words. The end-of-text token's output row is zero
and every other row is large: it is never sampled, so every generation runs its max_tokens
(the benchmark's generations are all the same length). Control and byte tokens are not
sampled either: completions are plain ASCII words.
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path

# (n_embd, n_layer, n_ff, n_head): "tiny" loads in a blink (0.6 MB: tests); "bench" is ~110 M
# parameters in F16 (~230 MB), slow enough on CPU that threads and parallel generations show
# (the measurements used a model of this size)
SIZES = {"tiny": (64, 2, 192, 4), "bench": (768, 12, 3072, 12)}
CONTEXT = 4096
WORDS = ["▁" + w for w in ("the", "queue", "worker", "task", "fleet", "model", "token", "host",
                           "celery", "redis", "gpu", "cpu", "batch", "slot", "thread")]
LOGIT_SCALE = 8.0  # logits' spread: sampled tokens beat a zero logit by e^(several)


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, types): <unk> <s> </s>, <0x00>..<0xFF>, then words and letters."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # unknown, control, control, byte (llama.cpp's token types)
    words = ["▁"] + WORDS + list(string.ascii_lowercase) + list(string.digits)
    tokens += words
    types += [1] * len(words)
    scores = [0.0] * 259 + [-float(i) for i in range(len(words))]
    return tokens, scores, types


def write(path: Path, size: str = "tiny", seed: int = 0) -> Path:
    import gguf  # a test and benchmark dependency only
    import numpy as np

    n_embd, n_layer, n_ff, n_head = SIZES[size]
    tokens, scores, types = vocabulary()
    rng = np.random.default_rng(seed)
    dtype = np.float32 if size == "tiny" else np.float16

    def weights(*shape: int, scale: float | None = None) -> np.ndarray:
        scale = scale if scale is not None else 1 / np.sqrt(shape[-1])
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(dtype)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"celery-fleet lab {size} (random weights)")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == np.float32
                         else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    # numpy shapes are (rows, columns) = (out, in): ggml's ne0 is the input dimension
    norm = np.ones(n_embd, dtype=np.float32)  # norms stay F32, as llama.cpp's converters do
    writer.add_tensor("token_embd.weight", weights(len(tokens), n_embd, scale=1.0))
    for i in range(n_layer):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", norm)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"{block}.ffn_norm.weight", norm)
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", norm)
    output = weights(len(tokens), n_embd, scale=LOGIT_SCALE / np.sqrt(n_embd))
    output[[t for t, kind in enumerate(types) if kind != 1]] = 0  # never </s>, <s>, bytes
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    args = parser.parse_args()
    print(write(args.out, args.size))


if __name__ == "__main__":
    main()
