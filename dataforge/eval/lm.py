"""The narrow interface evals see a model through: loglikelihood, rolling loglikelihood, generate.

Tasks never touch torch or a backend; any object with these three methods can be evaluated (a
transformers model here, a vLLM engine or an endpoint through `dataforge.generate`). The
transformers implementation reproduces lm-evaluation-harness's `HFLM` numbers:

- a request (context, continuation) is tokenized as lm-eval's `_encode_pair`: trailing whitespace
  moves from the context to the continuation, the continuation's tokens are
  enc(ctx + cont)[len(enc(ctx)):], and BOS follows the tokenizer's own default;
- the model sees enc(ctx) + cont[:-1], left-truncated to the model's max length;
- the score is the sum of the continuation tokens' log-probabilities.

It is faster because every distinct context runs once for all of its continuations: the contexts
of a batch run with a KV cache, and only the continuation tokens run per choice (and not at all
when every continuation is one token, as MMLU's letters are). Requests are sorted longest first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dataforge.errors import InputError
from dataforge.generate.base import Generation, GenerationBackend, Prompt, SamplingParams

Progress = Callable[[int], None] | None
DEFAULT_MAX_LENGTH = 2048          # lm-eval's fallback when neither config nor tokenizer says
_TOKENIZER_INFINITY = 1_000_000    # tokenizers report ~1e30 for "no limit"


@dataclass(frozen=True)
class RollingScore:
    """Loglikelihood of a whole text and the number of tokens it predicted."""

    ll: float
    n_tokens: int


class LanguageModel(Protocol):
    name: str
    fingerprint: str

    def loglikelihood(self, requests: Sequence[tuple[str, str]], progress: Progress = None) -> list[float]:
        """log P(continuation | context) for each (context, continuation)."""
        ...

    def loglikelihood_rolling(self, texts: Sequence[str], progress: Progress = None) -> list[RollingScore]:
        """Loglikelihood of each whole text, scored in disjoint windows of the model's max length."""
        ...

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, progress: Progress = None) -> list[Generation]:
        """One generation per prompt, through the shared `dataforge.generate` backends."""
        ...


def rolling_windows(tokens: Sequence[int], prefix_token: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's `get_rolling_token_windows(context_len=1)` + `make_disjoint_window`, as
    (context, continuation) pairs: disjoint windows of up to `max_len` predicted tokens, the first
    conditioned on the prefix token, each later one on the single token before it."""
    out: list[tuple[list[int], list[int]]] = []
    if not tokens:
        return out
    tokens = list(tokens)
    first = min(max_len, len(tokens))
    out.append(([prefix_token], tokens[:first]))
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        out.append(([tokens[done - 1]], tokens[done:done + n]))
        done += n
    return out


def resolve_max_length(config: Any, tokenizer: Any) -> int:
    """The context length lm-eval would use: config n_positions / max_position_embeddings / n_ctx,
    else the tokenizer's model_max_length, else 2048."""
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < _TOKENIZER_INFINITY:
        return int(limit)
    return DEFAULT_MAX_LENGTH


class HFLanguageModel:
    """A transformers causal LM (optionally under a peft adapter) behind the `LanguageModel` interface.

    `use_adapter=False` on a peft model scores the base weights (the adapter is disabled around each
    forward), so one loaded model serves both sides of a base-vs-tuned eval.
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str, fingerprint: str, batch_size: int = 16,
                 max_length: int | None = None, use_adapter: bool = True,
                 generator: Callable[[], GenerationBackend] | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.name, self.fingerprint = name, fingerprint
        self.batch_size = batch_size
        self.max_length = max_length or resolve_max_length(model.config, tokenizer)
        self.use_adapter = use_adapter
        self._make_generator, self._generator = generator, None
        self.prefix_token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.pad_token = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.prefix_token
        self._bos_text = tokenizer.decode([self.prefix_token]) if self.prefix_token is not None else None

    # ------------------------------------------------------------------ tokenization (lm-eval's rules)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with the tokenizer's default special tokens, except for a text that already
        starts with the BOS string (lm-eval's `has_bos_prefix`)."""
        out: list[list[int] | None] = [None] * len(texts)
        for with_special in (True, False):
            idx = [i for i, t in enumerate(texts)
                   if with_special != bool(self._bos_text and t.startswith(self._bos_text))]
            if idx:
                enc = self.tokenizer([texts[i] for i in idx], add_special_tokens=with_special)["input_ids"]
                for i, ids in zip(idx, enc):
                    out[i] = list(ids)
        return out  # type: ignore[return-value]

    def encode_pairs(self, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """lm-eval's `_encode_pair` for every request, each distinct context encoded once."""
        moved = []
        for ctx, cont in requests:
            n = len(ctx) - len(ctx.rstrip())
            moved.append((ctx[:-n], ctx[-n:] + cont) if n else (ctx, cont))
        contexts = sorted({c for c, _ in moved if c})
        ctx_ids = dict(zip(contexts, self.encode(contexts)))
        whole = self.encode([c + x for c, x in moved if c])
        empty = [x for c, x in moved if not c]
        bare = self.tokenizer(empty, add_special_tokens=False)["input_ids"] if empty else []
        pairs, w, b = [], iter(whole), iter(bare)
        for c, x in moved:
            if c:
                ids = ctx_ids[c]
                pairs.append((ids, next(w)[len(ids):]))
            else:
                ids = list(next(b))
                pairs.append(([self.prefix_token], ids) if ids[:1] != [self.prefix_token] else (ids[:1], ids[1:]))
        for (ctx, cont), (_, x) in zip(pairs, moved):
            if not cont:
                raise InputError(f"continuation {x!r} has no tokens of its own after its context")
        return pairs

    # ------------------------------------------------------------------ scoring

    def loglikelihood(self, requests: Sequence[tuple[str, str]], progress: Progress = None) -> list[float]:
        return self.loglikelihood_tokens(self.encode_pairs(requests), progress)

    def loglikelihood_rolling(self, texts: Sequence[str], progress: Progress = None) -> list[RollingScore]:
        """lm-eval's `loglikelihood_rolling`: the text encoded with the tokenizer's default special
        tokens (so with BOS where the tokenizer adds one), cut into disjoint windows."""
        windows, owner = [], []
        for i, ids in enumerate(self.encode(list(texts))):
            for w in rolling_windows(ids, self.prefix_token, self.max_length):
                windows.append(w)
                owner.append(i)
        lls = self.loglikelihood_tokens(windows, progress)
        totals, counts = [0.0] * len(texts), [0] * len(texts)
        for i, ll, (_, cont) in zip(owner, lls, windows):
            totals[i] += ll
            counts[i] += len(cont)
        return [RollingScore(ll, n) for ll, n in zip(totals, counts)]

    def loglikelihood_tokens(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                             progress: Progress = None) -> list[float]:
        """Sum of log P(cont tokens | ctx tokens), batched; each distinct context runs once per batch."""
        limit = self.max_length
        groups: dict[tuple[int, ...], list[tuple[tuple[int, ...], int]]] = {}
        for i, (ctx, cont) in enumerate(pairs):
            if len(cont) > limit:
                raise InputError(f"a continuation of {len(cont)} tokens does not fit the model's "
                                 f"{limit}-token context")
            keep = limit + 1 - len(cont)          # lm-eval: (ctx + cont)[-(limit + 1):][:-1]
            key = tuple(ctx[-keep:]) if len(ctx) > keep else tuple(ctx)
            groups.setdefault(key, []).append((tuple(cont), i))
        ordered = sorted(groups.items(), key=lambda kv: (-(len(kv[0]) + max(len(c) for c, _ in kv[1])), kv[0]))
        rows = [(ctx, cont, i) for ctx, members in ordered for cont, i in sorted(members, key=lambda m: -len(m[0]))]
        out = [0.0] * len(pairs)
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            for (_, _, i), ll in zip(batch, self._score_batch(batch)):
                out[i] = ll
            if progress is not None:
                progress(len(batch))
        return out

    def _score_batch(self, rows: Sequence[tuple[tuple[int, ...], tuple[int, ...], int]]) -> list[float]:
        import torch

        device = self.model.device
        contexts = list(dict.fromkeys(ctx for ctx, _, _ in rows))
        where = {ctx: j for j, ctx in enumerate(contexts)}
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), self.pad_token, dtype=torch.long)
        mask = torch.zeros((len(contexts), width), dtype=torch.long)
        for j, c in enumerate(contexts):      # left padding: every context ends at the same column
            ids[j, width - len(c):] = torch.tensor(c)
            mask[j, width - len(c):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        multi = any(len(cont) > 1 for _, cont, _ in rows)
        with torch.inference_mode(), self._adapter_state():
            first = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                               use_cache=multi, logits_to_keep=1)
            first_lp = _log_probs(first.logits[:, -1, :])            # [contexts, vocab]
            owner = torch.tensor([where[ctx] for ctx, _, _ in rows], device=device)
            head = torch.tensor([cont[0] for _, cont, _ in rows], device=device)
            scores = first_lp[owner, head]
            if multi:
                scores = scores + self._continuation_scores(rows, first.past_key_values, mask, owner)
        return scores.double().tolist()

    def _continuation_scores(self, rows, cache, ctx_mask, owner):
        """Log-probs of each continuation's tokens after the first, run on top of the contexts' cache."""
        import torch

        device = ctx_mask.device
        cache.reorder_cache(owner)                        # one cache row per continuation
        width = max(len(cont) for _, cont, _ in rows) - 1
        n = len(rows)
        inp = torch.full((n, width), self.pad_token, dtype=torch.long)
        target = torch.zeros((n, width), dtype=torch.long)
        valid = torch.zeros((n, width), dtype=torch.bool)
        for r, (_, cont, _) in enumerate(rows):
            k = len(cont) - 1
            if k:
                inp[r, :k] = torch.tensor(cont[:-1])
                target[r, :k] = torch.tensor(cont[1:])
                valid[r, :k] = True
        inp, target, valid = inp.to(device), target.to(device), valid.to(device)
        ctx_len = ctx_mask.sum(-1)[owner]
        positions = ctx_len[:, None] + torch.arange(width, device=device)[None, :]
        mask = torch.cat([ctx_mask[owner], valid.long()], dim=1)
        logits = self.model(input_ids=inp, attention_mask=mask, position_ids=positions,
                            past_key_values=cache, use_cache=False).logits
        picked = logits.float().gather(-1, target[..., None])[..., 0] - torch.logsumexp(logits.float(), dim=-1)
        return (picked * valid).sum(-1)

    def _adapter_state(self):
        if not self.use_adapter and hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ generation

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, progress: Progress = None) -> list[Generation]:
        if self._make_generator is None:
            raise InputError(f"model {self.name} was loaded without a generation backend")
        if self._generator is None:
            self._generator = self._make_generator()
        out = []
        step = max(1, self.batch_size)
        for start in range(0, len(prompts), step):
            chunk = prompts[start:start + step]
            out.extend(g[0] for g in self._generator.generate(chunk, params))
            if progress is not None:
                progress(len(chunk))
        return out

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()
            self._generator = None


def _log_probs(logits):
    import torch

    return torch.log_softmax(logits.float(), dim=-1)
