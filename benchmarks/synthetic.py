"""Synthetic Alpaca records with planted exact and near duplicates, for the dedupe and build benchmarks.

    from synthetic import make_alpaca          # run from benchmarks/, or put benchmarks/ on sys.path
    records, planted = make_alpaca(100_000, seed=0)

Records follow dataforge's RECORD_SCHEMA (as the collect stage emits them). Text is built from a
fixed list of ~400 common English words plus ~3,000 seeded pseudo-words, drawn with Zipf-Mandelbrot
frequencies so that function words repeat as in real prose: instructions come from 30 task patterns
with random slots and an optional clause, 30 % of records have an input of 5-30 words, and outputs
have 10-80 words in sentences of 4-20 words.

Planted copies (each of a distinct original):
* exact: `dup_frac` of the records are verbatim copies;
* near: `near_frac` are edited copies. An edit is either a case/punctuation change (20 %: the word
  tokens stay identical, as with re-scraped or re-formatted data) or 1-3 word substitutions,
  insertions or deletions in the output. The copy must be a near duplicate by dataforge's rule
  (dataforge/data/dedupe.py): the true Jaccard similarity of the word 3-shingles (same tokens as
  dataforge.data.ngrams) of EACH field (instruction, input, output) must be >= `near_min_jaccard`.
  Fewer edits are tried, then another original, so short outputs get case/punctuation edits or
  none at all. `per_field=False` plants by the Jaccard of the whole record instead (the rule before
  per-field comparison): its copies include edits of short outputs that are no longer duplicates.

`planted` has one row per copy: original_id, copy_id, kind ("exact" | "near"), jaccard (the true
3-shingle Jaccard the planting rule checked: the lowest field's, or the whole record's).
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from dataforge.data.record import RECORD_SCHEMA, with_record_defaults

BASE_COLUMNS = ("id", "source", "origin_file", "origin_line", "system", "history", "instruction", "input", "output")

_COMMON = """the of and to a in is it you that he was for on are with as his they be at one have this from
or had by word but what some we can out other were all there when up use your how said an each she which do
their time if will way about many then them write would like so these her long make thing see him two has
look more day could go come did number sound no most people my over know water than call first who may down
side been now find any new work part take get place made live where after back little only round man year
came show every good me give our under name very through just form sentence great think say help low line
differ turn cause much mean before move right boy old too same tell does set three want air well also play
small end put home read hand port large spell add even land here must big high such follow act why ask men
change went light kind off need house picture try us again animal point mother world near build self earth
father head stand own page should country found answer school grow study still learn plant cover food sun
four between state keep eye never last let thought city tree cross farm hard start might story saw far sea
draw left late run while press close night real life few north open seem together next white children begin
got walk example ease paper group always music those both mark often letter until mile river car feet care
second book carry took science eat room friend began idea fish mountain stop once base hear horse cut sure
watch color face wood main enough plain girl usual young ready above ever red list though feel talk bird
soon body dog family direct pose leave song measure door product black short numeral class wind question
happen complete ship area half rock order fire south problem piece told knew pass since top whole king space
heard best hour better true during hundred five remember step early hold west ground interest reach fast
verb sing listen six table travel less morning ten simple several vowel toward war lay against pattern slow
center love person money serve appear road map rain rule govern pull cold notice voice unit power town fine
certain fly fall lead cry dark machine note wait plan figure star box noun field rest correct able pound done
beauty drive stood contain front teach week final gave green quick develop ocean warm free minute strong
special mind behind clear tail produce fact street inch multiply nothing course stay wheel full force blue
object decide surface deep moon island foot system busy test record boat common gold possible plane stead
dry wonder laugh thousand ago ran check game shape equate hot miss brought heat snow tire bring yes distant
fill east paint language among""".split()

_SYLLABLES = ("ka lo mer tin sa vel dor ra pen qui lus ta ber no chi vok sel am bri ton ge ul fa rin mo dex "
              "pra sol ve nar i ko lim tes hu gal").split()

_PATTERNS = [
    "Explain how {n} affects {n}.", "Write a short paragraph about {a} {n}.", "List three ways to {v} a {n}.",
    "Summarize the following text.", "Describe the {n} of a {a} {n}.", "What is the difference between {n} and {n}?",
    "Give an example of {a} {n}.", "Rewrite the sentence so that it sounds more {a}.", "Why does {n} {v} the {n}?",
    "Classify the following {n} as {a} or {a}.", "Write a story about a {n} who wants to {v}.",
    "How can I {v} my {n} faster?", "Suggest a name for a {a} {n}.", "Compare {n} with {n} in two sentences.",
    "Translate the text into plain language.", "Generate a question about {n}.", "Outline a plan to {v} the {n}.",
    "Tell me a fact about {n}.", "Create a list of {a} {n} ideas.", "Find the main idea of the passage.",
    "Write a poem about the {n}.", "Explain why {n} is {a}.", "Describe a day in the life of a {n}.",
    "What would happen if {n} could {v}?", "Give advice to someone who wants to {v}.",
    "Correct the grammar in the text.", "Name the {a} parts of a {n}.", "Write an email about the {n}.",
    "Propose a title for an article on {n}.", "Answer the question using the passage.",
]
_TOKEN = re.compile(r"[^\W_]+")
_SLOT = re.compile(r"\{[nva]\}")
_SLOT_FROM = 150


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    words = list(dict.fromkeys(_COMMON))
    seen = set(words)
    while len(words) < size:
        w = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def _shingles(text: str, k: int = 3) -> set[tuple[str, ...]]:
    toks = _TOKEN.findall(text.lower())
    if len(toks) < k:
        return {tuple(toks)} if toks else set()
    return {tuple(toks[i:i + k]) for i in range(len(toks) - k + 1)}


def jaccard(a: str, b: str, k: int = 3) -> float:
    """True Jaccard similarity of the word k-shingle sets of two texts."""
    sa, sb = _shingles(a, k), _shingles(b, k)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


class _Writer:
    """Draws words and numbers and renders records. All randomness comes from one seeded generator,
    drawn in large batches: per-call numpy overhead would otherwise dominate at 1 M records."""

    _BATCH = 1 << 16

    def __init__(self, rng: np.random.Generator, vocab_size: int = 3400):
        self.rng = rng
        self.vocab = np.array(_vocabulary(rng, vocab_size), dtype=object)
        weights = 1.0 / (np.arange(len(self.vocab)) + 2.7)
        self.cdf = np.cumsum(weights / weights.sum())
        self._words: list[str] = []
        self._uniform: list[float] = []

    def uniform(self) -> float:
        if not self._uniform:
            self._uniform = self.rng.random(self._BATCH).tolist()
        return self._uniform.pop()

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi)."""
        return lo + int(self.uniform() * (hi - lo))

    def words(self, n: int) -> list[str]:
        if len(self._words) < n:
            idx = np.minimum(np.searchsorted(self.cdf, self.rng.random(self._BATCH + n)), len(self.vocab) - 1)
            self._words = self.vocab[idx].tolist()
        out = self._words[-n:]
        del self._words[-n:]
        return out

    def sentences(self, n_words: int) -> list[list[str]]:
        out, left = [], n_words
        while left > 0:
            k = min(left, self.randint(4, 21))
            if left - k < 4:
                k = left
            out.append(self.words(k))
            left -= k
        return out

    def slot(self) -> str:
        """A content word for a pattern slot: skip the most frequent (function) words."""
        return self.vocab[self.randint(_SLOT_FROM, len(self.vocab))]

    def instruction(self) -> str:
        text = _SLOT.sub(lambda _: self.slot(), _PATTERNS[self.randint(0, len(_PATTERNS))])
        if self.uniform() < 0.6:
            clause = " ".join(self.words(self.randint(2, 9)))
            text = f"{text[:-1]} {clause}{text[-1]}"
        return text


def render(sentences: list[list[str]]) -> str:
    return " ".join(" ".join(s).capitalize() + "." for s in sentences)


def _edit_words(writer: _Writer, sentences: list[list[str]], edits: int) -> list[list[str]]:
    out = [list(s) for s in sentences]
    for _ in range(edits):
        s = out[writer.randint(0, len(out))]
        op = writer.randint(0, 3)
        pos = writer.randint(0, len(s))
        if op == 0:
            s[pos] = writer.words(1)[0]
        elif op == 1:
            s.insert(pos, writer.words(1)[0])
        elif len(s) > 1:
            del s[pos]
    return out


def _reformat(text: str, writer: _Writer) -> str:
    """Change case and punctuation only: same word tokens, different bytes."""
    choice = writer.randint(0, 3)
    if choice == 0:
        return text.upper()
    if choice == 1:
        return text.replace(".", "!").replace(" ", "  ", 1)
    return text.lower().replace(".", " ...")


def make_alpaca(n: int, seed: int, dup_frac: float = 0.05, near_frac: float = 0.05, *,
                near_min_jaccard: float = 0.85, sources: dict[str, float] | None = None,
                per_field: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`n` records (RECORD_SCHEMA) in seeded random order, and the planted copies (see module doc)."""
    rng = np.random.default_rng(seed)
    writer = _Writer(rng)
    n_exact, n_near = round(n * dup_frac), round(n * near_frac)
    n_base = n - n_exact - n_near
    if n_base < n_exact + n_near:
        raise ValueError("dup_frac + near_frac must leave at least as many originals as copies")
    names = list(sources or {"synthetic": 1.0})
    share = np.array([(sources or {"synthetic": 1.0})[s] for s in names], dtype=float)
    src = rng.choice(len(names), size=n_base, p=share / share.sum())

    base = []
    for _ in range(n_base):
        inp = render(writer.sentences(writer.randint(5, 31))) if writer.uniform() < 0.3 else ""
        base.append((writer.instruction(), inp, writer.sentences(writer.randint(10, 81))))
    texts = [(ins, inp, render(out)) for ins, inp, out in base]

    originals = rng.permutation(n_base)
    rows = [(names[src[b]], *texts[b]) for b in range(n_base)]
    planted = []
    for b in originals[:n_exact]:
        rows.append(rows[b])
        planted.append((int(b), len(rows) - 1, "exact", 1.0))
    pool = iter(originals[n_exact:])
    while len(planted) < n_exact + n_near:
        b = next(pool, None)
        if b is None:
            raise ValueError(f"could not plant {n_near} near copies with Jaccard >= {near_min_jaccard}")
        b = int(b)
        ins, inp, out = base[b]

        def similarity(cand: tuple[str, str, str], b: int = b) -> float:
            if per_field:
                return min(jaccard(x, y) for x, y in zip(texts[b], cand, strict=True))
            return jaccard("\n".join(texts[b]), "\n".join(cand))

        if writer.uniform() < 0.2:
            copy = (_reformat(ins, writer), inp, _reformat(texts[b][2], writer))
        else:
            copy = None
            u = writer.uniform()
            for edits in range(1 if u < 0.5 else 2 if u < 0.85 else 3, 0, -1):
                cand = (ins, inp, render(_edit_words(writer, out, edits)))
                if similarity(cand) >= near_min_jaccard:
                    copy = cand
                    break
            if copy is None:
                continue
        rows.append((rows[b][0], *copy))
        planted.append((b, len(rows) - 1, "near", similarity(copy)))

    order = rng.permutation(len(rows))
    position = np.empty(len(rows), dtype=np.int64)
    position[order] = np.arange(len(rows))
    ordered = [rows[k] for k in order]
    ids = [f"{s}:0:{p + 1}" for p, (s, *_r) in enumerate(ordered)]
    records = pl.DataFrame({
        "id": ids,
        "source": [r[0] for r in ordered],
        "origin_file": ["synthetic.jsonl"] * len(ordered),
        "origin_line": np.arange(1, len(ordered) + 1),
        "system": [""] * len(ordered),
        "history": [[] for _ in ordered],
        "instruction": [r[1] for r in ordered],
        "input": [r[2] for r in ordered],
        "output": [r[3] for r in ordered],
    }, schema={k: v for k, v in RECORD_SCHEMA.items() if k in BASE_COLUMNS})
    records = with_record_defaults(records)
    planted_df = pl.DataFrame(
        {"original_id": [ids[position[b]] for b, *_ in planted], "copy_id": [ids[position[c]] for _, c, *_ in planted],
         "kind": [k for *_, k, _ in planted], "jaccard": [j for *_, j in planted]},
        schema={"original_id": pl.Utf8, "copy_id": pl.Utf8, "kind": pl.Utf8, "jaccard": pl.Float64},
    )
    return records, planted_df
