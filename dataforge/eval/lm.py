"""The narrow interface evals see a model through: loglikelihood, rolling loglikelihood, generate.

Tasks never touch torch or a backend; any object with these three methods can be evaluated (a
transformers model here, a vLLM engine or an endpoint through `dataforge.generate`). The
transformers implementation reproduces lm-evaluation-harness's `HFLM` numbers:

- a request (context, continuation) is tokenized as lm-eval's `_encode_pair`: trailing whitespace
  moves from the context to the continuation, the continuation's tokens are
  enc(ctx + cont)[len(enc(ctx)):], and BOS follows the tokenizer's own default;
- the model sees enc(ctx) + cont[:-1], left-truncated to the model's max length;
- the score is the sum of the continuation tokens' log-probabilities.

It is faster because every distinct context runs once for all of its continuations: a batch of
contexts runs with plain causal attention and keeps its KV cache, then all of a context's
continuations run together in one row on top of it, each masked to see the context and its own
earlier tokens (and that second pass is skipped when every continuation is one token, as MMLU's
letters are). Requests are sorted longest first.
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
    """lm-eval's `get_rolling_token_windows(context_len=1)` + `make_disjoint_window`, as (context,
    continuation) pairs: disjoint windows of up to `max_len` predicted tokens; the first is
    conditioned on the prefix token, a full later one on the one token before it, and the last,
    partial one on as much of the preceding text as fits."""
    tokens = list(tokens)
    if not tokens:
        return []
    first = min(max_len, len(tokens))
    windows = [([prefix_token, *tokens[:first - 1]], tokens[:first])]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        end = done + n
        windows.append((tokens[end - max_len - 1:end - 1], tokens[end - n:end]))
        done = end
    return [(ctx[:len(ctx) - (len(pred) - 1)], pred) for ctx, pred in windows]


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


Members = tuple[tuple[tuple[int, ...], int], ...]     # (continuation tokens, request index)
SHARED_PREFIX_MIN = 32       # contexts sharing at least this many leading tokens share one row
ROW_QUERY_CAP = 512          # most tokens packed behind one prefix


@dataclass(frozen=True)
class Entry:
    """One context within a row: its tokens after the row's shared prefix, and its continuations."""

    suffix: tuple[int, ...]
    members: Members


@dataclass(frozen=True)
class Block:
    """One row of a batch: a prefix run with plain causal attention, then every entry's suffix and
    continuations, each attending to the prefix, its own suffix and its own earlier tokens only."""

    prefix: tuple[int, ...]
    entries: tuple[Entry, ...]

    @property
    def queries(self) -> int:
        return sum(len(e.suffix) + sum(len(c) - 1 for c, _ in e.members) for e in self.entries)

    @property
    def n_requests(self) -> int:
        return sum(len(e.members) for e in self.entries)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def pack_blocks(groups: dict[tuple[int, ...], list[tuple[tuple[int, ...], int]]]) -> list[Block]:
    """Rows for a set of (context -> continuations) groups.

    A context's continuations share its row (split only when their tokens pass ROW_QUERY_CAP, as
    long rolling windows do); contexts that share at least SHARED_PREFIX_MIN leading tokens (the
    same few-shot examples, MMLU's five dev questions, TruthfulQA's primer) share one prefix run.
    Every context keeps at least its last token as suffix, so every first continuation token is
    predicted in the second pass. Rows come longest first.
    """
    units: list[tuple[tuple[int, ...], Members]] = []
    for ctx, members in groups.items():
        chunk: list[tuple[tuple[int, ...], int]] = []
        used = 0
        for cont, i in sorted(members, key=lambda m: -len(m[0])):
            if chunk and used + len(cont) - 1 > ROW_QUERY_CAP:
                units.append((ctx, tuple(chunk)))
                chunk, used = [], 0
            chunk.append((cont, i))
            used += len(cont) - 1
        units.append((ctx, tuple(chunk)))
    units.sort(key=lambda u: (u[0], -len(u[1])))
    blocks: list[Block] = []
    prefix: tuple[int, ...] = ()
    members: list[tuple[tuple[int, ...], Members]] = []
    queries = 0
    for ctx, mem in units:
        own = sum(len(c) - 1 for c, _ in mem)
        if members:
            shared = min(_common_prefix(prefix, ctx[:-1]), len(prefix))
            grown = queries + (len(prefix) - shared) * len(members) + len(ctx) - shared + own
            if shared >= SHARED_PREFIX_MIN and grown <= ROW_QUERY_CAP:
                prefix, queries = prefix[:shared], grown
                members.append((ctx, mem))
                continue
            blocks.append(_block(prefix, members))
        prefix, members, queries = ctx[:-1], [(ctx, mem)], 1 + own
    if members:
        blocks.append(_block(prefix, members))
    blocks.sort(key=lambda b: (-(len(b.prefix) + b.queries), b.prefix))
    return blocks


def _block(prefix: tuple[int, ...], members: list[tuple[tuple[int, ...], Members]]) -> Block:
    return Block(prefix, tuple(Entry(ctx[len(prefix):], mem) for ctx, mem in members))


class HFLanguageModel:
    """A transformers causal LM (optionally under a peft adapter) behind the `LanguageModel` interface.

    `use_adapter=False` on a peft model scores the base weights (the adapter is disabled around each
    forward), so one loaded model serves both sides of a base-vs-tuned eval; `adapter_name` picks
    one of several adapters loaded into it.
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str, fingerprint: str, batch_size: int = 16,
                 max_length: int | None = None, use_adapter: bool = True, adapter_name: str | None = None,
                 generator: Callable[[], GenerationBackend] | None = None):
        attention = getattr(model.config, "_attn_implementation", None) or "eager"
        if attention not in ("sdpa", "eager"):
            raise InputError(f"loglikelihood scoring needs attn_implementation sdpa or eager (custom block "
                             f"masks), the model uses {attention}")
        self.model, self.tokenizer = model, tokenizer
        self.name, self.fingerprint = name, fingerprint
        self.batch_size = batch_size
        self.max_length = max_length or resolve_max_length(model.config, tokenizer)
        self.use_adapter, self.adapter_name = use_adapter, adapter_name
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
                for i, ids in zip(idx, enc, strict=True):
                    out[i] = list(ids)
        return out  # type: ignore[return-value]

    def encode_pairs(self, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """lm-eval's `_encode_pair` for every request, each distinct context encoded once."""
        moved = []
        for ctx, cont in requests:
            n = len(ctx) - len(ctx.rstrip())
            moved.append((ctx[:-n], ctx[-n:] + cont) if n else (ctx, cont))
        contexts = sorted({c for c, _ in moved if c})
        ctx_ids = dict(zip(contexts, self.encode(contexts), strict=True))
        whole = self.encode([c + x for c, x in moved if c])
        empty = [x for c, x in moved if not c]
        bare = self.tokenizer(empty, add_special_tokens=False)["input_ids"] if empty else []
        pairs, w, b = [], iter(whole), iter(bare)
        for c, _ in moved:
            if c:
                ids = ctx_ids[c]
                pairs.append((ids, next(w)[len(ids):]))
            else:
                ids = list(next(b))
                pairs.append(([self.prefix_token], ids) if ids[:1] != [self.prefix_token] else (ids[:1], ids[1:]))
        for (_, cont), (_, x) in zip(pairs, moved, strict=True):
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
        for i, ll, (_, cont) in zip(owner, lls, windows, strict=True):
            totals[i] += ll
            counts[i] += len(cont)
        return [RollingScore(ll, n) for ll, n in zip(totals, counts, strict=True)]

    def loglikelihood_tokens(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                             progress: Progress = None) -> list[float]:
        """Sum of log P(cont tokens | ctx tokens) for each pair, batched longest first."""
        limit = self.max_length
        groups: dict[tuple[int, ...], list[tuple[tuple[int, ...], int]]] = {}
        for i, (ctx, cont) in enumerate(pairs):
            if len(cont) > limit:
                raise InputError(f"a continuation of {len(cont)} tokens does not fit the model's "
                                 f"{limit}-token context")
            keep = limit + 1 - len(cont)          # lm-eval: (ctx + cont)[-(limit + 1):][:-1]
            key = tuple(ctx[-keep:]) if len(ctx) > keep else tuple(ctx)
            groups.setdefault(key, []).append((tuple(cont), i))
        blocks = pack_blocks(groups)
        solo = [b for b in blocks if b.n_requests == 1]
        packed = [b for b in blocks if b.n_requests > 1]
        out = [0.0] * len(pairs)
        for kind, score in ((solo, self._score_solo), (packed, self._score_batch)):
            for start in range(0, len(kind), self.batch_size):
                batch = kind[start:start + self.batch_size]
                for i, ll in score(batch):
                    out[i] = ll
                if progress is not None:
                    progress(sum(b.n_requests for b in batch))
        return out

    def _score_solo(self, blocks: Sequence[Block]) -> list[tuple[int, float]]:
        """Rows holding one request each (rolling windows, one-choice questions) run exactly as
        lm-eval runs every request: ctx + cont[:-1] in one plain causal pass."""
        import torch

        device = self.model.device
        seqs = []
        for b in blocks:
            (cont, i), = b.entries[0].members
            ctx = b.prefix + b.entries[0].suffix
            seqs.append((ctx, cont, i))
        width = max(len(ctx) + len(cont) - 1 for ctx, cont, _ in seqs)
        ids = torch.full((len(seqs), width), self.pad_token, dtype=torch.long)
        rows, cols, tokens = [], [], []
        for j, (ctx, cont, _) in enumerate(seqs):
            seq = ctx + cont[:-1]
            ids[j, :len(seq)] = torch.tensor(seq)
            rows += [j] * len(cont)
            cols += range(len(ctx) - 1, len(ctx) - 1 + len(cont))
            tokens += cont
        with torch.inference_mode(), self._adapter_state():
            logits = self.model(input_ids=ids.to(device)).logits.float()
            row, col, tok = (torch.tensor(x, device=device) for x in (rows, cols, tokens))
            picked = logits[row, col, tok] - torch.logsumexp(logits, dim=-1)[row, col]
        sums = torch.zeros(len(seqs), dtype=torch.float64, device=device).index_add_(0, row, picked.double())
        return [(i, ll) for (_, _, i), ll in zip(seqs, sums.tolist(), strict=True)]

    def _score_batch(self, blocks: Sequence[Block]) -> list[tuple[int, float]]:
        """(request index, loglikelihood) for every request in a batch of rows.

        Pass 1 runs the prefixes (right-padded, plain causal attention) and keeps their KV cache.
        Pass 2 runs every suffix and continuation on top of it under a block mask, each token at the
        position it would have had in its own unpacked sequence ctx + cont[:-1].
        """
        import torch

        device = self.model.device
        dtype = self.model.dtype if self.model.dtype.is_floating_point else torch.float32
        n_rows = len(blocks)
        width = max(len(b.prefix) for b in blocks)
        n_q = max(b.queries for b in blocks)
        blocked = torch.finfo(dtype).min
        inp = torch.full((n_rows, n_q), self.pad_token, dtype=torch.long)
        positions = torch.zeros((n_rows, n_q), dtype=torch.long)
        mask = torch.full((n_rows, 1, n_q, width + n_q), blocked, dtype=dtype)
        causal = torch.triu(torch.full((n_q, n_q), blocked, dtype=dtype), 1)   # [:k, :k] is k x k causal
        targets: list[tuple[int, int, int, int]] = []      # (row, query, token, request index)
        for j, b in enumerate(blocks):
            p, q = len(b.prefix), 0
            for e in b.entries:
                s_len = len(e.suffix)
                own = slice(q, q + s_len)
                inp[j, own] = torch.tensor(e.suffix)
                positions[j, own] = p + torch.arange(s_len)
                mask[j, 0, own, :p] = 0
                mask[j, 0, own, width + q:width + q + s_len] = causal[:s_len, :s_len]
                last = q + s_len - 1
                q += s_len
                for cont, i in e.members:
                    targets.append((j, last, cont[0], i))
                    k = len(cont) - 1
                    if k == 0:
                        continue
                    span = slice(q, q + k)
                    inp[j, span] = torch.tensor(cont[:-1])
                    positions[j, span] = p + s_len + torch.arange(k)
                    mask[j, 0, span, :p] = 0
                    mask[j, 0, span, width + own.start:width + own.stop] = 0
                    mask[j, 0, span, width + q:width + q + k] = causal[:k, :k]
                    targets.extend((j, q + o, cont[o + 1], i) for o in range(k))
                    q += k
            mask[j, 0, q:, width] = 0           # padded queries see one key, so no row is all masked
        with torch.inference_mode(), self._adapter_state():
            cache = None
            if width:
                ids = torch.full((n_rows, width), self.pad_token, dtype=torch.long)
                for j, b in enumerate(blocks):
                    ids[j, :len(b.prefix)] = torch.tensor(b.prefix)
                cache = self.model(input_ids=ids.to(device), use_cache=True, logits_to_keep=1).past_key_values
                for j, b in enumerate(blocks):          # prefix padding is not attended to
                    mask[j, 0, :, len(b.prefix):width] = blocked
            else:
                mask = mask[:, :, :, width:]
            logits = self.model(input_ids=inp.to(device), attention_mask=mask.to(device),
                                position_ids=positions.to(device), past_key_values=cache, use_cache=False).logits
            row, query, token, owner = (torch.tensor(col, device=device) for col in zip(*targets, strict=True))
            norm = torch.logsumexp(logits.float(), dim=-1)
            picked = logits[row, query, token].float() - norm[row, query]
        sums: dict[int, float] = {}
        for i, lp in zip(owner.tolist(), picked.double().tolist(), strict=True):
            sums[i] = sums.get(i, 0.0) + lp
        return list(sums.items())

    def _adapter_state(self):
        if not self.use_adapter and hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        if self.adapter_name is not None and hasattr(self.model, "set_adapter"):
            return self._active(self.adapter_name)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _active(self, name: str):
        """Score with adapter `name` of a peft model holding several (one load serves every tune)."""
        previous = self.model.active_adapter
        self.model.set_adapter(name)
        try:
            yield
        finally:
            self.model.set_adapter(previous)

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
