"""Generation speed for a tune: vLLM on merged weights, vLLM multi-LoRA, transformers + peft.

Same prompts, same adapter, greedy, in one run, at two model sizes: the built-in tiny model, and a
random-init Llama of ~70M parameters built from a config (with a random-init LoRA on it, B made
non-zero so the adapter changes the outputs). tok/s counts generated tokens over generation time;
engine start-up and the one-off merge are reported apart (they are paid once per eval, not per token).
The path `dataforge eval --backend vllm` chooses (`lora_mode=auto`) is named in the output.

    VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python benchmarks/bench_generate.py --tiny 128x64 --large 32x32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "generate"))


def build_large(root: Path) -> tuple[str, str]:
    """A ~70M-parameter Llama (random init, the tiny tokenizer) and a rank-16 LoRA with random B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from dataforge.models import load_tokenizer

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=512, intermediate_size=2048, num_hidden_layers=16,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    model_dir, adapter_dir = root / "llama70m", root / "llama70m-lora"
    model.save_pretrained(str(model_dir))
    load_tokenizer("tiny").save_pretrained(str(model_dir))
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    peft_model.save_pretrained(str(adapter_dir))
    print(f"large model: {n_params / 1e6:.1f}M parameters", flush=True)
    return str(model_dir), str(adapter_dir)


def timed(make, prompts, params, **gen_kw) -> dict:
    t0 = time.perf_counter()
    backend = make()
    start = time.perf_counter() - t0
    backend.generate(prompts[:2], params, **gen_kw)                      # warm-up
    t1 = time.perf_counter()
    gens = backend.generate(prompts, params, **gen_kw)
    secs = time.perf_counter() - t1
    backend.close()
    tokens = sum(g[0].completion_tokens for g in gens)
    return {"start_s": round(start, 1), "gen_s": round(secs, 2), "tokens": tokens,
            "tok_per_s": round(tokens / secs, 1), "texts": [g[0].text for g in gens]}


def bench(label: str, model: str, adapter: str, n_prompts: int, max_tokens: int) -> dict:
    from dataforge.generate import SamplingParams, load_backend
    from dataforge.generate.adapters import choose_mode, merged_model

    base_prompts = [f"### Instruction:\nWrite note number {i} about the pump, the filter and the field.\n\n"
                    f"### Response:\n" for i in range(n_prompts)]
    params = SamplingParams(max_tokens=max_tokens)
    t0 = time.perf_counter()
    merged_model(model, adapter)
    merge_s = time.perf_counter() - t0
    rows = {
        "transformers + peft (batch 16)": timed(lambda: load_backend("transformers", model, adapter=adapter,
                                                                     dtype="float32", batch_size=16),
                                                base_prompts, params),
        "vLLM multi-LoRA (enable_lora)": timed(lambda: load_backend("vllm", model, dtype="float32",
                                                                    lora_adapters=(adapter,), max_model_len=512),
                                               base_prompts, params, adapter=adapter),
        "vLLM merged weights": timed(lambda: load_backend("vllm", model, dtype="float32", adapter=adapter,
                                                          lora_mode="merged", max_model_len=512),
                                     base_prompts, params),
    }
    ref = rows["transformers + peft (batch 16)"]["texts"]
    chosen = {"merged": "vLLM merged weights", "multi-lora": "vLLM multi-LoRA (enable_lora)"}[
        choose_mode("auto", 1, on_gpu=False)]
    print(f"\n{label}: {n_prompts} prompts x {max_tokens} tokens; merge (once, cached) {merge_s:.1f} s")
    print("| path | tok/s | x transformers | engine start s | same text as transformers |")
    print("| --- | ---: | ---: | ---: | ---: |")
    base = rows["transformers + peft (batch 16)"]["tok_per_s"]
    for name, r in rows.items():
        same = sum(a == b for a, b in zip(r["texts"], ref, strict=True))
        mark = " (chosen)" if name == chosen else ""
        print(f"| {name}{mark} | {r['tok_per_s']:,} | {r['tok_per_s'] / base:.2f}x | {r['start_s']} | "
              f"{same}/{len(ref)} |", flush=True)
    best = max(r["tok_per_s"] for r in rows.values())
    return {"label": label, "chosen": chosen, "chosen_is_fastest": rows[chosen]["tok_per_s"] == best,
            **{k: {kk: v for kk, v in r.items() if kk != "texts"} for k, r in rows.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", default="128x64", help="PROMPTSxTOKENS for the tiny model")
    ap.add_argument("--large", default="32x32", help="PROMPTSxTOKENS for the 70M model")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from lora_helpers import train_tiny_adapter

    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("DATAFORGE_HOME", tmp)
        root = Path(tmp)
        tiny_adapter = str(train_tiny_adapter(root / "tiny-lora"))
        results = []
        for label, (model, adapter), size in (("tiny (4M)", ("tiny", tiny_adapter), args.tiny),
                                              ("llama 70M (random init)", build_large(root), args.large)):
            n, k = (int(x) for x in size.split("x"))
            results.append(bench(label, model, adapter, n, k))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
