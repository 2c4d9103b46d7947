"""The build pipeline's config: one model per section, and `BuildConfig` over them all.

This file is the documentation of every build option: `dataforge build --help` and
`docs`-style listings are generated from the field descriptions below.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dataforge.config.base import StrictModel


class OnError(str, Enum):
    skip = "skip"
    fail = "fail"


class InputFormat(str, Enum):
    auto = "auto"
    alpaca = "alpaca"
    sharegpt = "sharegpt"
    messages = "messages"
    self_instruct = "self_instruct"
    text = "text"
    mapped = "mapped"
    # Preference formats (task: preference); see dataforge/data/preference.py.
    pairwise = "pairwise"
    ranked = "ranked"
    hh = "hh"
    kto = "kto"
    ab = "ab"


PREFERENCE_FORMATS = (InputFormat.pairwise, InputFormat.ranked, InputFormat.hh, InputFormat.kto, InputFormat.ab)


class Task(str, Enum):
    sft = "sft"
    preference = "preference"


class InputSpec(StrictModel):
    path: str = Field(description="File (jsonl/json/csv/parquet/txt), a datasets.save_to_disk folder, a "
                                  "self-instruct output folder, or a hub dataset id.")
    source: str = Field("default", description="Source name; drives mixing and per-source statistics.")
    format: InputFormat = Field(InputFormat.auto, description="Record format; auto detects from the fields: alpaca, "
                                "sharegpt (conversations, tools), messages (OpenAI), self_instruct (instruction + "
                                "instances), text (a `text` field or a .txt file: trained on whole). Preference builds (task: "
                                "preference) name one of: pairwise (chosen/rejected beside Alpaca fields or a "
                                "conversation), ranked (a prompt with K ranked or scored completions), hh (full-text "
                                "chosen/rejected split at the shared prompt), kto (one completion with a boolean "
                                "label), ab (a rated A/B sheet from `dataforge export-ab`).")
    columns: dict[str, str] = Field(default_factory=dict,
                                    description="Column mapping, canonical -> yours, e.g. {instruction: question, output: answer}; "
                                                "`role` and `content` name the keys inside each conversation turn (default "
                                                "from/value for sharegpt, role/content for messages).")
    split: str = Field("train", description="Split to read from a hub dataset or a DatasetDict folder.")
    subset: str | None = Field(None, description="Hub dataset config name.")
    limit: int | None = Field(None, ge=1, description="Read at most this many records (for quick trials).")
    roles: dict[str, str] = Field(default_factory=dict,
                                  description="Conversation role mapping, yours -> user | assistant | system | tool, added to "
                                              "the defaults (human/user -> user, gpt/assistant/function_call -> assistant, "
                                              "observation/function/tool -> tool, system -> system), e.g. {bot: assistant}.")
    ignore_fields: list[str] = Field(default_factory=list,
                                     description="Fields to leave out on purpose: never read (even `tools` or `system`) "
                                                 "and counted as ignored. Fields that change what a record means (label, "
                                                 "kto_tag, chosen, rejected, score, scores, rating, ranks, completions) "
                                                 "are refused unless listed here; every unused field is reported as "
                                                 "ignored in the manifest and the summary.")


class LengthBounds(StrictModel):
    min_chars: int = Field(1, ge=0, description="Minimum characters after normalization.")
    max_chars: int = Field(20000, ge=1, description="Maximum characters after normalization.")

    @model_validator(mode="after")
    def _order(self):
        if self.min_chars > self.max_chars:
            raise ValueError("min_chars must be <= max_chars")
        return self


class CleanConfig(StrictModel):
    normalize: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normalization form.")
    collapse_whitespace: bool = Field(True, description="Collapse runs of spaces/tabs; keep newlines and code indentation.")
    instruction: LengthBounds = Field(default_factory=LengthBounds, description="Length bounds for the instruction.")
    input: LengthBounds = Field(default_factory=lambda: LengthBounds(min_chars=0), description="Length bounds for the input.")
    output: LengthBounds = Field(default_factory=LengthBounds, description="Length bounds for the output.")
    drop_control_chars: bool = Field(True, description="Drop records with control characters (other than \\t \\n \\r).")
    fill: dict[str, str] = Field(default_factory=dict, description="Values for placeholders left in the data, e.g. "
                                 "{name: Forge} turns every {{name}} (or {{ name }}) in the text fields and history into "
                                 "Forge (CLI: --fill name=Forge). Placeholders without a value are kept as they are and "
                                 "counted per source in the manifest and the summary.")

    @field_validator("fill")
    @classmethod
    def _fill_keys(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not k.isidentifier()]
        if bad:
            raise ValueError(f"placeholder names must be plain names like 'name' (bad: {', '.join(map(repr, bad))})")
        return v


class ThinkPolicy(str, Enum):
    keep = "keep"
    strip = "strip"
    final_only = "final_only"


class TemplateConfig(StrictModel):
    name: str = Field("alpaca", description="Template name (a file in templates/) or a path to a template YAML.")
    variants: bool = Field(False, description="Use the template's paraphrased header variants, chosen by seeded hash.")
    think: ThinkPolicy = Field(ThinkPolicy.keep, description="`<think>...</think>` reasoning at the start of an "
                               "assistant turn: keep (rendered and trained), strip (removed from every turn before "
                               "rendering), final_only (rendered, but the reasoning is input: only the answer after it "
                               "is trained). Saved with the template, so eval renders prompts the same way.")


class KeepRule(str, Enum):
    first = "first"
    longest = "longest"


RecordField = Literal["system", "history", "instruction", "input", "output"]


class NearDedupeConfig(StrictModel):
    enabled: bool = Field(True, description="Run MinHash-LSH near-duplicate removal.")
    fields: list[RecordField] = Field(["history", "instruction", "input", "output"], min_length=1,
                                      description="Record fields compared. Two records are near duplicates only when EACH "
                                                  "of these fields is (so questions over a shared passage, or one answer "
                                                  "to different questions, stay); see dataforge/data/dedupe.py.")
    skip_sources: list[str] = Field(default_factory=list,
                                    description="Sources near-dedupe leaves alone (never removed, never a kept record for "
                                                "others): for sets whose records are similar on purpose.")
    warn_share: float = Field(0.2, ge=0.0, le=1.0, description="The build summary warns when near-dedupe removes more "
                                                                "than this share of a source's records.")
    shingle_size: int = Field(3, ge=1, le=32, description="Word n-gram size of the shingles.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (signature length).")
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Estimated Jaccard similarity at or above which two records are near duplicates.")
    bands: int | None = Field(None, ge=1, description="LSH bands (rows = num_perm // bands); default: the fewest candidates that still "
                                                      "pass 98% of pairs at the threshold (18 x 7 for 128 permutations at 0.8).")
    keep: KeepRule = Field(KeepRule.first, description="Which record of a cluster survives: first seen, or longest output.")
    seed: int = Field(1234, description="Seed of the MinHash permutations; apart from the build's `seed`, so reseeding the "
                                        "split or the mix does not change which records are duplicates.")

    @model_validator(mode="after")
    def _bands_fit(self):
        if self.bands is not None and self.bands > self.num_perm:
            raise ValueError(f"bands ({self.bands}) must be <= num_perm ({self.num_perm})")
        return self

    @field_validator("fields")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"fields must not repeat (got {', '.join(v)})")
        return v


class DedupeConfig(StrictModel):
    exact: bool = Field(True, description="Drop exact duplicates of normalized (instruction, input, output).")
    near: NearDedupeConfig = Field(default_factory=NearDedupeConfig)
    reference: list[InputSpec] = Field(default_factory=list,
                                       description="Reference sets: drop records that near-duplicate them (no dedupe inside them).")
    reference_near: NearDedupeConfig | None = Field(None, description="Near-duplicate settings for `reference:` sets "
                                                    "(shingles, permutations, threshold, bands, seed; `enabled` and `keep` "
                                                    "do not apply); default: the same as `near`.")

    @property
    def reference_settings(self) -> NearDedupeConfig:
        """What reference dedupe compares with: `reference_near`, else the in-set `near` settings."""
        return self.reference_near or self.near


class DecontaminateConfig(StrictModel):
    enabled: bool = Field(True, description="Drop records sharing long n-grams with eval/test sets.")
    ngram: int = Field(13, ge=3, le=100, description="Word n-gram length that counts as contamination.")
    sets: list[InputSpec] = Field(default_factory=list, description="Eval/test sets as files.")
    suite: str | None = Field(None, description="An eval suite from evals/ (name or path) whose task data is used.")


class SplitConfig(StrictModel):
    train: float = Field(0.9, ge=0, description="Train size: a fraction (<1) or a record count (>=1). Train always takes every record "
                                                "val and test do not (nothing is dropped); this value is checked, not used to sample.")
    val: float = Field(0.05, ge=0, description="Validation size: a fraction (<1) or a count (>=1).")
    test: float = Field(0.05, ge=0, description="Test size: a fraction (<1) or a count (>=1).")
    stratify_by_source: bool = Field(True, description="Split each source separately so every split keeps the source proportions.")

    @model_validator(mode="after")
    def _fractions_fit(self):
        fractions = {k: v for k, v in (("train", self.train), ("val", self.val), ("test", self.test)) if v < 1}
        if sum(fractions.values()) > 1 + 1e-9:
            raise ValueError("fractions sum to " + " + ".join(f"{k} {v:g}" for k, v in fractions.items())
                             + f" = {sum(fractions.values()):g} > 1")
        return self


class MixConfig(StrictModel):
    proportions: dict[str, float] = Field(default_factory=dict,
                                          description="Target share of each source in the train split, e.g. {domain: 0.8, general: 0.2}. Empty: keep all.")
    total: int | None = Field(None, ge=1, description="Train split size after mixing; default: the largest size reachable without "
                                                      "repeating records (the scarcest source, relative to its share, is kept whole). "
                                                      "A larger total repeats records of the sources that run short.")

    @field_validator("proportions")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if x < 0]
        if bad:
            raise ValueError(f"proportions must be >= 0 (bad: {', '.join(bad)})")
        if v and sum(v.values()) <= 0:
            raise ValueError("proportions must not all be 0")
        return v


class Overlength(str, Enum):
    drop = "drop"
    truncate = "truncate"
    error = "error"


class TrainTurns(str, Enum):
    all = "all"
    last = "last"


class TokenizeConfig(StrictModel):
    enabled: bool = Field(True, description="Tokenize the splits (needs a tokenizer).")
    tokenizer: str = Field("tiny", description="Tokenizer: 'tiny' (built-in), a local folder or a hub id.")
    max_length: int = Field(512, ge=8, description="Maximum tokens per record (or per pack).")
    train_on_inputs: bool = Field(False, description="Train on prompt tokens too (labels not masked).")
    train_turns: TrainTurns = Field(TrainTurns.all, description="Multi-turn records: all (every assistant turn is "
                                    "trained, each with its end-of-turn text, as LLaMA-Factory and axolotl do) or last "
                                    "(only the final answer; earlier turns are context).")
    overlength: Overlength = Field(Overlength.truncate, description="Over-length records: drop (rejected as too_long), "
                                   "truncate (cut the prompt's middle after the instruction first, then the response's end, "
                                   "never inside a character; the EOS stays), or error.")
    keep_instruction_tokens: int | None = Field(None, ge=1, description="truncate: how much of the instruction a cut "
                                                "prompt keeps (with everything before it). Unset: all of it; N: its first N "
                                                "tokens. A record whose prompt cannot keep that while its response keeps "
                                                "min(its length, a quarter of max_length) is dropped as prompt_truncated_away.")
    padding_side: Literal["right", "left"] = Field("right", description="Padding side.")
    pad_to_multiple_of: int | None = Field(None, ge=1, description="Pad each batch's length up to a multiple of this (sequences are stored unpadded).")
    pack: bool = Field(False, description="Pack train records into max_length sequences (best-fit decreasing).")


class PairRule(str, Enum):
    all = "all"
    best_vs_rest = "best_vs_rest"
    best_vs_worst = "best_vs_worst"


class BothBadRule(str, Enum):
    drop = "drop"
    reference = "reference"


class PreferenceConfig(StrictModel):
    """How preference inputs become pairs (task: preference); the rules: dataforge/data/preference.py."""

    pairs: PairRule = Field(PairRule.all, description="Ranked inputs: which pairs a prompt's K completions make: all "
                            "C(K,2) pairs, the best against each of the rest (K-1), or the best against the worst (1). "
                            "Pairs whose two completions rank or score the same are dropped as `tie`.")
    ab_both_bad: BothBadRule = Field(BothBadRule.drop, description="A/B sheets: a `both_bad` rating is dropped (drop), "
                                     "or, when the sheet row has a reference answer, makes two pairs: the reference "
                                     "over each output (reference). A `tie` is always dropped as `tie`, an unrated row "
                                     "as `unrated`.")


class BuildConfig(StrictModel):
    """A whole build. One section per stage; the stages and their order are `dataforge.data.stages.BUILD_STAGES`."""

    inputs: list[InputSpec] = Field(description="Input datasets.", min_length=1)
    task: Task = Field(Task.sft, description="What the build makes: sft (prompt -> response records) or preference "
                                             "(chosen/rejected pairs, or KTO-labelled completions, for DPO/KTO/reward "
                                             "training). A preference build needs a preference `format` on every input.")
    output: str = Field("runs/build", description="Run folder.")
    seed: int = Field(1234, description="Seed of the split's draw, the mix's sampling order and the template's header "
                                        "variants. The MinHash permutations of dedupe have their own (dedupe.near.seed).")
    on_error: OnError = Field(OnError.skip, description="Bad records: skip (reject with reason) or fail (exit 2).")
    clean: CleanConfig = Field(default_factory=CleanConfig)
    template: TemplateConfig = Field(default_factory=TemplateConfig)
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig,
                                         description="Preference builds: pair rules for ranked inputs and A/B sheets.")

    @model_validator(mode="after")
    def _formats_fit_task(self):
        """A preference input in an SFT build (or the reverse) would be read as the wrong thing, and
        KTO rows (one completion) cannot share tokenized tables with pairs (two)."""
        problems = []
        for i, spec in enumerate(self.inputs):
            pref = spec.format in PREFERENCE_FORMATS
            if self.task is Task.preference and not pref:
                problems.append(f"inputs[{i}].format: a preference build reads {', '.join(f.value for f in PREFERENCE_FORMATS)}; "
                                f"got '{spec.format.value}'")
            if self.task is Task.sft and pref:
                problems.append(f"inputs[{i}].format: '{spec.format.value}' is preference data; set `task: preference`")
        kinds = {spec.format is InputFormat.kto for spec in self.inputs if spec.format in PREFERENCE_FORMATS}
        if len(kinds) > 1:
            problems.append("inputs: kto inputs (single labelled completions) cannot be mixed with pair formats in one build")
        if self.task is Task.preference and self.tokenize.pack:
            problems.append("tokenize.pack: preference builds keep one pair per row; packing does not apply")
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @model_validator(mode="after")
    def _sources_exist(self):
        """Names of sources elsewhere in the config must be input sources: a typo would otherwise fail
        only after collect, dedupe and split have run (mix), or be ignored silently (skip_sources)."""
        known = sorted({spec.source for spec in self.inputs})
        named = [("mix.proportions", s) for s in self.mix.proportions] + \
                [("dedupe.near.skip_sources", s) for s in self.dedupe.near.skip_sources]
        problems = [f"{where}.{s}: no input has source '{s}' (input sources: {', '.join(known)})"
                    for where, s in named if s not in known]
        if problems:
            raise ValueError("\n  ".join(problems))
        return self
