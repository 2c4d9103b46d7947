"""The bundled demo data, generated deterministically from a seed and committed in `assets/demo/`.

Two sources, `domain` (Verdant Row support desk, Alpaca jsonl) and `general` (standard-library
questions answered with pretraining text, ShareGPT jsonl), plus Self-Instruct seed tasks. Each file
carries planted problems that a build must catch: exact duplicates, near duplicates with one word
changed, empty outputs, whitespace-only instructions, a control character, one over-long record
and (in `general.jsonl`) one truncated JSON line. `planted.json` lists the 1-based line of every
planted record, so tests can check a build against it instead of trusting counts alone.

Guarantees, checked while generating (a failure is a bug in the generator, not in user input):
distinct records are below `DISTINCT_MAX` word-3-gram Jaccard of each other, and each planted near
duplicate is at or above `NEAR_MIN` of its original.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

from dataforge.paths import DEMO_DATA_DIR
from dataforge.tiny.corpus import CORPUS_FILE, read_corpus, split_corpus
from dataforge.tiny.demo_domain import PROBLEMS
from dataforge.tiny.demo_general import general_record, usable_documents
from dataforge.tiny.demo_seed_tasks import seed_tasks
from dataforge.tiny.similarity import DISTINCT_MAX, NEAR_MIN, jaccard, shingles

DEMO_SEED = 7
DISTINCT_RECORDS = 280
EXACT_DUPLICATES = 14
NEAR_DUPLICATES = 14
EMPTY_OUTPUTS = 3
BLANK_INSTRUCTIONS = 2
CONTROL_CHARS = 1
OVERLONG = 1
TRUNCATED_JSON = 1  # general.jsonl only
OVERLONG_CHARS = 24_000  # over the build's default max_chars of 20,000
NEAR_MIN_WORDS = 50  # a one-word edit only stays above NEAR_MIN in a text at least this long


def record_text(rec: dict) -> str:
    """All the words of a record, in either format, as the near-duplicate stage sees them."""
    if "conversations" in rec:
        return " ".join(t["value"] for t in rec["conversations"])
    return " ".join((rec["instruction"], rec.get("input", ""), rec["output"]))


@dataclass
class DemoFile:
    """Rows of one demo file in order; `planted` maps each problem kind to its 1-based line numbers."""

    lines: list[str] = field(default_factory=list)
    planted: dict[str, list[int]] = field(default_factory=dict)

    def add(self, row: dict | str, kind: str | None = None) -> None:
        self.lines.append(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
        if kind:
            self.planted.setdefault(kind, []).append(len(self.lines))


def distinct_records(candidates, count: int) -> list[dict]:
    """The first `count` candidates that are not near any record accepted before them."""
    accepted: list[dict] = []
    kept_shingles: list[frozenset] = []
    for rec in candidates:
        sh = shingles(record_text(rec))
        if all(jaccard(sh, other) < DISTINCT_MAX for other in kept_shingles):
            accepted.append(rec)
            kept_shingles.append(sh)
            if len(accepted) == count:
                return accepted
    raise RuntimeError(f"the generator ran out of distinct records after {len(accepted)} of {count}")


def _domain_candidates(r: Random):
    while True:
        for problem in PROBLEMS:
            yield problem(r)


def _general_candidates(r: Random, docs):
    while True:
        first = r.choice(docs)
        yield general_record([first, r.choice(docs)] if r.random() < 0.15 else [first], r)


def _edit_one_word(text: str, r: Random) -> str:
    """Swap one word for a plausible neighbour: the kind of edit a copy-paste-and-tweak leaves."""
    swaps = {"the": "this", "a": "one", "and": "plus", "is": "was", "to": "into", "of": "for",
             "in": "inside", "then": "and then", "with": "using", "on": "upon"}
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if w in swaps]
    i = r.choice(spots) if spots else len(words) - 1
    words[i] = swaps.get(words[i], words[i] + "s")
    return " ".join(words)


def near_copy(rec: dict, r: Random) -> dict:
    out = json.loads(json.dumps(rec))
    if "conversations" in out:
        turn = next(t for t in reversed(out["conversations"]) if t["from"] == "gpt")
        turn["value"] = _edit_one_word(turn["value"], r)
    else:
        out["output"] = _edit_one_word(out["output"], r)
    if jaccard(shingles(record_text(out)), shingles(record_text(rec))) < NEAR_MIN:
        raise RuntimeError("a planted near duplicate drifted below NEAR_MIN")
    return out


def _overlong_domain(r: Random) -> dict:
    entry = ("{t}: {bay} pH {ph:.1f}, EC {ec:.1f} mS/cm, water {w} C, pumps normal, lights on schedule.")
    lines = []
    while sum(len(x) + 1 for x in lines) < OVERLONG_CHARS:
        lines.append(entry.format(t=f"{len(lines) % 24:02d}:00", bay=f"Bay {r.randint(1, 8)}",
                                  ph=r.uniform(5.6, 6.4), ec=r.uniform(0.8, 2.2), w=r.randint(18, 23)))
    return {"instruction": "Paste the full hourly sensor log for the Fernhollow site this quarter.",
            "input": "", "output": "\n".join(lines)}


def _plant(base: list[dict], r: Random, fresh: list[dict], *, empty, blank, control, overlong) -> DemoFile:
    """Lay out distinct records with planted copies after their originals and broken records mixed in.

    `fresh` holds distinct records never used in `base`, so each broken record is the only reason its
    row can be rejected.
    """
    long_enough = [i for i, rec in enumerate(base) if len(record_text(rec).split()) >= NEAR_MIN_WORDS]
    exact_of = r.sample(range(len(base)), EXACT_DUPLICATES)
    near_of = r.sample([i for i in long_enough if i not in exact_of], NEAR_DUPLICATES)
    rows: list[tuple[float, dict, str | None]] = [(float(i), rec, None) for i, rec in enumerate(base)]
    for i in exact_of:
        rows.append((r.uniform(i + 0.1, len(base)), json.loads(json.dumps(base[i])), "exact_duplicate"))
    for i in near_of:
        rows.append((r.uniform(i + 0.1, len(base)), near_copy(base[i], r), "near_duplicate"))
    broken = ([(empty(rec), "empty_output") for rec in fresh[:EMPTY_OUTPUTS]]
              + [(blank(rec), "blank_instruction") for rec in fresh[EMPTY_OUTPUTS:EMPTY_OUTPUTS + BLANK_INSTRUCTIONS]]
              + [(control(fresh[EMPTY_OUTPUTS + BLANK_INSTRUCTIONS]), "control_character"), (overlong, "overlong")])
    for rec, kind in broken:
        rows.append((r.uniform(0, len(base)), rec, kind))
    rows.sort(key=lambda t: t[0])
    out = DemoFile()
    for _, rec, kind in rows:
        out.add(rec, kind)
    return out


def _blank_alpaca(rec: dict) -> dict:
    return {**rec, "instruction": " \t "}


def _control_alpaca(rec: dict) -> dict:
    return {**rec, "output": rec["output"].replace(" ", " \x07", 1)}


def _empty_alpaca(rec: dict) -> dict:
    return {**rec, "output": ""}


def _last_turn(rec: dict, role: str, fn) -> dict:
    turns = [dict(t) for t in rec["conversations"]]
    i = max(k for k, t in enumerate(turns) if t["from"] == role)
    turns[i]["value"] = fn(turns[i]["value"])
    return {"conversations": turns}


def domain_file(seed: int = DEMO_SEED) -> DemoFile:
    r = Random(seed)
    records = distinct_records(_domain_candidates(r), DISTINCT_RECORDS + EMPTY_OUTPUTS + BLANK_INSTRUCTIONS + CONTROL_CHARS)
    base, fresh = records[:DISTINCT_RECORDS], records[DISTINCT_RECORDS:]
    return _plant(base, r, fresh, empty=_empty_alpaca, blank=_blank_alpaca, control=_control_alpaca,
                  overlong=_overlong_domain(r))


def general_file(seed: int = DEMO_SEED, corpus_path: str | Path = CORPUS_FILE) -> DemoFile:
    r = Random(seed + 1)
    train, _ = split_corpus(read_corpus(corpus_path))
    docs = usable_documents(train)
    records = distinct_records(_general_candidates(r, docs), DISTINCT_RECORDS + EMPTY_OUTPUTS + BLANK_INSTRUCTIONS + CONTROL_CHARS)
    base, fresh = records[:DISTINCT_RECORDS], records[DISTINCT_RECORDS:]
    long_doc = max(train, key=lambda d: len(d.text))
    overlong = {"conversations": [
        {"from": "human", "value": f"Quote the documentation of `{long_doc.name}` ten times over."},
        {"from": "gpt", "value": "\n\n".join([long_doc.text] * (OVERLONG_CHARS // len(long_doc.text) + 1))},
    ]}
    out = _plant(base, r, fresh,
                 empty=lambda rec: _last_turn(rec, "gpt", lambda v: ""),
                 blank=lambda rec: _last_turn(rec, "human", lambda v: "   "),
                 control=lambda rec: _last_turn(rec, "gpt", lambda v: v.replace(" ", " \x1b", 1)),
                 overlong=overlong)
    at = r.randrange(len(out.lines) // 4, 3 * len(out.lines) // 4)
    cut = out.lines[at]
    truncated = cut[: len(cut) // 2]
    out.lines.insert(at, truncated)
    # Every planted line at or after the insertion point moves down by one.
    out.planted = {k: [n + 1 if n > at else n for n in v] for k, v in out.planted.items()}
    out.planted["truncated_json"] = [at + 1]
    return out


def write_demo_data(out_dir: str | Path = DEMO_DATA_DIR, seed: int = DEMO_SEED,
                    corpus_path: str | Path = CORPUS_FILE) -> dict:
    """Write domain.jsonl, general.jsonl, seed_tasks.jsonl and planted.json; returns the planted map."""
    from dataforge.util.atomic import write_json, write_jsonl, write_text

    out_dir = Path(out_dir)
    planted = {}
    for name, demo in (("domain.jsonl", domain_file(seed)), ("general.jsonl", general_file(seed, corpus_path))):
        write_text(out_dir / name, "\n".join(demo.lines) + "\n")
        planted[name] = {"lines": len(demo.lines), "distinct_records": DISTINCT_RECORDS,
                         "planted": {k: sorted(v) for k, v in sorted(demo.planted.items())}}
    write_jsonl(out_dir / "seed_tasks.jsonl", seed_tasks())
    write_json(out_dir / "planted.json", {"seed": seed, "files": planted})
    return planted
