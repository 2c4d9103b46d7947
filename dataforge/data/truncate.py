"""How an over-length record is cut (`tokenize.overlength: truncate`), and when it is dropped instead.

A sequence is [prefix] + prompt + response + [eos]; `available` tokens are left for the prompt and the
response. The rule, all in tokens:

* The prompt is cut first, in its middle: a head and a tail survive. The tail is the prompt's end,
  with the answer cue (`### Response:`, a chat template's assistant header).
* The head always reaches through the instruction: all of it by default, or its first
  `keep_instruction_tokens` tokens. A response is never trained without the request it answers.
  The instruction is located as its last occurrence in the prompt (so an input that repeats it only
  protects more); where the prompt does not hold it verbatim, the prompt is not cut at all.
* The prompt keeps at least max(MIN_PROMPT_TOKENS, that head + TAIL_TOKENS) tokens, or all of it if
  fewer, and its head is at least half of what it keeps.
* The response keeps its start: what is left.
* A record is dropped instead (reason `prompt_truncated_away`) when its prompt cannot keep that much
  while the response keeps min(its length, a quarter of `available`): a response cut to a few tokens
  and then ended would teach the model to stop there.
* A cut never splits a character. Byte-level tokens can hold part of a UTF-8 sequence, so the kept
  response is backed off to end, and the prompt's head to end, and its tail to start, on a character
  boundary (at most 3 tokens each). A truncated record can therefore be a few tokens short of
  max_length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_PROMPT_TOKENS = 16
TAIL_TOKENS = MIN_PROMPT_TOKENS // 2   # the prompt's end a cut keeps: its answer cue
RESPONSE_SHARE = 4                      # a cut response keeps at least 1/4 of the budget (or all of itself)
_UTF8_TAIL = 3                          # bytes of a character that can follow its first byte
_WINDOW = 4                             # tokens that hold at least a whole character's bytes


@dataclass
class Cut:
    """Per record: prompt head, prompt tail and response tokens kept, and whether it is dropped."""

    head: np.ndarray
    tail: np.ndarray
    response: np.ndarray
    lost: np.ndarray          # over-length records whose instruction cannot be kept: prompt_truncated_away
    protected: np.ndarray     # prompt tokens through the kept part of the instruction


def protected_tokens(prompts: Sequence[str], instructions: Sequence[str], keep: int | None,
                     lengths_of: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Tokens from the prompt's start through its instruction (or the instruction's first `keep`
    tokens). `lengths_of` gives the token counts of prompt prefixes, encoded as the prompts are."""
    starts, ends = [], []
    for prompt, instruction in zip(prompts, instructions, strict=True):
        text = (instruction or "").strip()
        at = prompt.rfind(text) if text else -1
        starts.append(prompt[:at] if at >= 0 else prompt)
        ends.append(prompt[:at + len(text)] if at >= 0 else prompt)
    through = lengths_of(ends)
    if keep is None:
        return through
    return np.minimum(lengths_of(starts) + keep, through)


def plan_cuts(p_len: np.ndarray, r_len: np.ndarray, available: np.ndarray, over: np.ndarray,
              protected: np.ndarray) -> Cut:
    """The rule of the module docstring, for every record at once (records not `over` keep all)."""
    need = np.minimum(p_len, np.maximum(MIN_PROMPT_TOKENS, protected + TAIL_TOKENS))
    p_keep = np.where(over, np.clip(available - r_len, need, p_len), p_len)
    r_floor = np.minimum(r_len, available // RESPONSE_SHARE)
    lost = over & (p_keep > available - r_floor)
    r_keep = np.where(over, np.maximum(available - p_keep, 0), r_len)
    cut = over & (p_keep < p_len)
    head = np.where(cut, np.maximum(protected, p_keep - p_keep // 2), p_keep)
    return Cut(head=head, tail=p_keep - head, response=np.minimum(r_keep, r_len), lost=lost, protected=protected)


def end_on_character(tokenizer: Any, values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`lengths` shortened so each range values[start:start + length] ends on a whole character."""
    lengths = np.asarray(lengths, dtype=np.int64).copy()
    todo = np.flatnonzero(lengths > 0)
    for _ in range(_UTF8_TAIL):
        if not len(todo):
            break
        windows = [values[s + max(0, n - _WINDOW):s + n].tolist() for s, n in zip(starts[todo], lengths[todo], strict=True)]
        todo = todo[[t.endswith("\ufffd") for t in _decode(tokenizer, windows)]]
        lengths[todo] -= 1
        todo = todo[lengths[todo] > 0]
    return lengths


def start_on_character(tokenizer: Any, values: np.ndarray, ends: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`lengths` shortened so each range values[end - length:end] starts on a whole character."""
    lengths = np.asarray(lengths, dtype=np.int64).copy()
    todo = np.flatnonzero(lengths > 0)
    for _ in range(_UTF8_TAIL):
        if not len(todo):
            break
        windows = [values[e - n:e - n + min(n, _WINDOW)].tolist() for e, n in zip(ends[todo], lengths[todo], strict=True)]
        todo = todo[[t.startswith("\ufffd") for t in _decode(tokenizer, windows)]]
        lengths[todo] -= 1
        todo = todo[lengths[todo] > 0]
    return lengths


def _decode(tokenizer: Any, windows: list[list[int]]) -> list[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None:
        return backend.decode_batch(windows, skip_special_tokens=False)
    return tokenizer.batch_decode(windows, skip_special_tokens=False, clean_up_tokenization_spaces=False)
