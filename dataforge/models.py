"""Loading models and tokenizers the normal Hugging Face way.

`tiny` names the built-in model shipped in `dataforge/assets/tiny-llama`; anything else is a local
folder or a hub id and goes straight to `from_pretrained`, so the same code serves a 4M-parameter
test model and a 70B hub model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataforge.errors import InputError
from dataforge.paths import TINY_MODEL_DIR, is_hub_id
from dataforge.util.fingerprint import fingerprint, sha256_tree

BUILTIN_MODELS = {"tiny": TINY_MODEL_DIR}
# Every file a Hugging Face tokenizer can be loaded from (vocabulary, merges, special tokens, chat
# template); model weights and the model config are not among them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json")
TOKENIZER_PATTERNS = ("*.model", "*.tiktoken")


def resolve_model(name_or_path: str) -> str:
    """Map a built-in name to its folder; check that a local-looking path exists."""
    if name_or_path in BUILTIN_MODELS:
        path = BUILTIN_MODELS[name_or_path]
        if not (path / "config.json").is_file():
            raise InputError(f"the built-in model is missing from {path}; run `dataforge tiny-model build`")
        return str(path)
    p = Path(name_or_path).expanduser()
    if p.exists():
        return str(p)
    if not is_hub_id(name_or_path):
        raise InputError(f"model path does not exist: {name_or_path}")
    return name_or_path


def load_tokenizer(name_or_path: str, **kwargs: Any):
    from transformers import AutoTokenizer

    path = resolve_model(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise InputError(f"cannot load tokenizer '{name_or_path}': {exc}") from None


def tokenizer_files(name_or_path: str) -> list[Path]:
    """The files a tokenizer is made of, so a build's cache key covers their content. A hub id's
    files come from the local hub cache (fetched first when online, as loading the tokenizer would)."""
    from fnmatch import fnmatch

    folder = Path(resolve_model(name_or_path))
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(name_or_path, allow_patterns=[*TOKENIZER_FILES, *TOKENIZER_PATTERNS]))
        except Exception as exc:  # offline and not cached, unknown id, no access: all mean "cannot load"
            raise InputError(f"cannot load tokenizer '{name_or_path}': {str(exc).splitlines()[0][:300]}") from None
    return sorted(f for f in folder.iterdir() if f.is_file() and
                  (f.name in TOKENIZER_FILES or any(fnmatch(f.name, p) for p in TOKENIZER_PATTERNS)))


def load_causal_lm(name_or_path: str, adapter: str | None = None, *, dtype: Any = None,
                   device: str | None = None, **kwargs: Any):
    """Base model plus an optional peft adapter, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(name_or_path)
    if dtype is None:
        dtype = torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    except OSError as exc:
        raise InputError(f"cannot load model '{name_or_path}': {exc}") from None
    if adapter is not None:
        from peft import PeftModel

        if not Path(adapter).is_dir():
            raise InputError(f"adapter folder does not exist: {adapter}")
        try:
            model = PeftModel.from_pretrained(model, adapter)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise InputError(f"adapter {adapter} does not match base model '{name_or_path}': "
                             f"{str(exc).splitlines()[0][:300]}") from None
    if device and "quantization_config" not in kwargs:     # bitsandbytes places its weights itself
        model = model.to(device)
    model.eval()
    return model


def model_fingerprint(name_or_path: str, adapter: str | None = None) -> str:
    """Content hash of local weights (and adapter); for a hub id, the id and its resolved revision."""
    path = Path(resolve_model(name_or_path))
    base = sha256_tree(path) if path.exists() else name_or_path
    extra = sha256_tree(adapter) if adapter else None
    return fingerprint(base, extra)
