"""Self-Instruct (Wang et al. 2022) and its Stanford Alpaca variant, resumable at any moment.

One batch of the Self-Instruct method:
  1. build `batch_size` prompts, each mixing human seed instructions with machine ones (6 + 2),
     sampled with a per-batch seeded RNG;
  2. generate, parse the numbered list, drop whole any completion that hit the length limit;
  3. filter each candidate (length, keywords, start, novelty against seeds + pool) and pool the rest;
  4. ask whether each new task is a classification task, then generate its instances, output-first
     for classification and input-first otherwise; clean and deduplicate them;
  5. accept tasks with at least one instance until `num_tasks` are accepted.
The Alpaca method samples 3 seed tasks with input and output per prompt and asks for 20 complete
tasks at once, so there is no instance step.

Every generation call goes through the journal (`journal.py`); the outputs are rewritten atomically
after each batch. A rerun over the same folder replays the journal and carries on.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dataforge.errors import StateError
from dataforge.generate.base import Generation
from dataforge.generate.registry import load_from_options
from dataforge.models import load_tokenizer, resolve_model
from dataforge.selfinstruct.config import Method, PromptStyle, Sampling, SelfInstructConfig
from dataforge.selfinstruct.filters import (
    INSTRUCTION_FILTERS,
    InstructionFilters,
    invalid_instance,
    judge_instances,
)
from dataforge.selfinstruct.journal import GenerationJournal, RecordedGenerator
from dataforge.selfinstruct.ledger import JOURNAL_FILE, MANIFEST_FILE, RUN_FILES, STATE_FILE, Ledger
from dataforge.selfinstruct.novelty import NoveltyIndex
from dataforge.selfinstruct.parse import (
    Instance,
    parse_alpaca_tasks,
    parse_input_first,
    parse_is_classification,
    parse_numbered_instructions,
    parse_output_first,
)
from dataforge.selfinstruct.prompts import (
    alpaca_prompt,
    as_chat,
    classification_prompt,
    instance_prompt,
    self_instruct_prompt,
)
from dataforge.selfinstruct.seeds import SeedTask, load_seed_tasks
from dataforge.util.atomic import write_json
from dataforge.util.fingerprint import fingerprint, library_versions, sha256_file

ProgressCallback = Callable[[Ledger, int], None]  # (ledger, target) after every batch
TEXT_CAP = 2000


@dataclass
class SelfInstructResult:
    output: Path
    manifest: dict


def mix_instructions(rng: random.Random, human: list[str], machine: list[str], num_human: int,
                     num_machine: int) -> list[str]:
    """The in-context instructions of one prompt: up to `num_machine` machine ones, human seeds for the
    rest of the `num_human + num_machine` slots (while the pool is small), in shuffled order."""
    chosen = rng.sample(machine, min(num_machine, len(machine)))
    chosen += rng.sample(human, min(num_human + num_machine - len(chosen), len(human)))
    rng.shuffle(chosen)
    return chosen


class _Batches:
    """The algorithm over one run's state; `run_batch(b)` is deterministic given the journal."""

    def __init__(self, cfg: SelfInstructConfig, seeds: list[SeedTask], generator: RecordedGenerator, chat: bool):
        self.cfg, self.seeds, self.generator, self.chat = cfg, seeds, generator, chat
        self.ledger = Ledger()
        self.filters = InstructionFilters(cfg.filters)
        self.novelty = NoveltyIndex(cfg.filters.novelty_threshold, cfg.filters.use_stemmer)
        for seed in seeds:
            self.novelty.add(seed.instruction)

    def _generate(self, batch: int, stage: str, texts: list[str], sampling: Sampling) -> list[Generation]:
        seed = int(fingerprint(self.cfg.seed, batch, stage), 16) % (2 ** 31)
        prompts = [as_chat(t) if self.chat else t for t in texts]
        return [gens[0] for gens in self.generator.generate(f"b{batch:05d}/{stage}", prompts, sampling.params(seed))]

    def run_batch(self, batch: int) -> None:
        if self.cfg.method == Method.alpaca:
            self._alpaca_batch(batch)
        else:
            self._self_instruct_batch(batch)
        self.ledger.prompts += self.cfg.batch_size
        self.ledger.batches += 1

    def _candidates(self, batch: int, i: int, gen: Generation, items: list) -> list[tuple[str, object]]:
        """(candidate id, item) of one completion's usable items; records the unusable ones."""
        completion_id = f"b{batch:05d}p{i:02d}"
        ids = [f"{completion_id}c{k:02d}" for k in range(len(items))]
        self.ledger.candidates += len(items)
        if not items:
            self.ledger.reject("completion", "unparseable", "no numbered item in the completion",
                               completion_id=completion_id, text=gen.text[:TEXT_CAP])
            return []
        for _ in items:
            self.ledger.check("truncated")
        if gen.finish_reason == "length":
            for cid, item in zip(ids, items, strict=True):
                self.ledger.reject("instruction", "truncated", "the completion hit max_tokens and is dropped whole",
                                   candidate_id=cid, instruction=getattr(item, "instruction", item))
            return []
        return list(zip(ids, items, strict=True))

    def _screen(self, cid: str, text: str) -> bool:
        """Instruction filters in order; a survivor joins the novelty pool at once, so later candidates
        of the same batch are compared with it too."""
        for name in INSTRUCTION_FILTERS[:-1]:
            self.ledger.check(name)
            reason = getattr(self.filters, name)(text)
            if reason is not None:
                self.ledger.reject("instruction", name, reason, candidate_id=cid, instruction=text)
                return False
        self.ledger.check("novelty")
        nearest = self.novelty.nearest_above(text)
        if nearest is not None:
            self.ledger.reject("instruction", "novelty", f"ROUGE-L F {nearest.score:.4f} >= "
                               f"{self.cfg.filters.novelty_threshold}", candidate_id=cid, instruction=text,
                               most_similar=nearest.text, score=nearest.score)
            return False
        self.novelty.add(text)
        return True

    def _settle(self, entry: dict, rows: list[dict], why_empty: str) -> None:
        """Accept a pooled task with rows, unless it has none or the target is already met."""
        self.ledger.check("instances")
        if not rows:
            entry["status"] = "no_instances"
            self.ledger.reject("task", "instances", why_empty, candidate_id=entry["id"], instruction=entry["instruction"])
            return
        self.ledger.check("target_reached")
        if self.ledger.accepted >= self.cfg.num_tasks:
            entry["status"] = "target_reached"
            self.ledger.reject("task", "target_reached", f"{self.cfg.num_tasks} tasks were already accepted",
                               candidate_id=entry["id"], instruction=entry["instruction"])
            return
        self.ledger.accept(entry, rows)

    def _self_instruct_batch(self, batch: int) -> None:
        m = self.cfg.self_instruct
        rng = random.Random(f"{self.cfg.seed}:{batch}")
        machine = [e["instruction"] for e in self.ledger.pool]
        human = [s.instruction for s in self.seeds]
        texts = [self_instruct_prompt(mix_instructions(rng, human, machine, m.num_seed_tasks, m.num_machine_tasks))
                 for _ in range(self.cfg.batch_size)]
        new = []
        for i, gen in enumerate(self._generate(batch, "instructions", texts, m.sampling)):
            for cid, text in self._candidates(batch, i, gen, parse_numbered_instructions(gen.text)):
                if self._screen(cid, text):
                    entry = {"id": cid, "instruction": text, "batch": batch, "status": "pending"}
                    self.ledger.pool.append(entry)
                    new.append(entry)
        if new:
            self._instances(batch, new)

    def _instances(self, batch: int, new: list[dict]) -> None:
        m = self.cfg.self_instruct
        answers = self._generate(batch, "classify", [classification_prompt(e["instruction"], m.classify_examples)
                                                     for e in new], m.classify_sampling)
        for entry, answer in zip(new, answers, strict=True):
            entry["is_classification"] = parse_is_classification(answer.text)
        prompts = [instance_prompt(e["instruction"], e["is_classification"], m.instance_examples) for e in new]
        for entry, gen in zip(new, self._generate(batch, "instances", prompts, m.instances_sampling), strict=True):
            parsed = (parse_output_first if entry["is_classification"] else parse_input_first)(gen.text)
            if gen.finish_reason == "length" and parsed:
                cut = parsed.pop()
                self.ledger.reject("instance", "truncated", "last instance of a completion that hit max_tokens",
                                   candidate_id=entry["id"], instruction=entry["instruction"],
                                   input=cut.input, output=cut.output)
            kept = []
            for verdict in judge_instances(parsed, m.max_instances):
                if verdict.reason is None:
                    kept.append(verdict.instance)
                else:
                    self.ledger.reject("instance", verdict.reason, "instance dropped", candidate_id=entry["id"],
                                       instruction=entry["instruction"], input=verdict.instance.input,
                                       output=verdict.instance.output)
            entry["instances"] = [{"input": x.input, "output": x.output} for x in kept]
            why = "no valid instance in the completion" if parsed else "no instance could be parsed"
            if not parsed and gen.text.strip():
                entry["raw_instances"] = gen.text[:TEXT_CAP]
            self._settle(entry, [{"instruction": entry["instruction"], "input": x.input, "output": x.output}
                                 for x in kept], why)

    def _alpaca_batch(self, batch: int) -> None:
        m = self.cfg.alpaca
        rng = random.Random(f"{self.cfg.seed}:{batch}")
        texts, firsts = [], []
        for _ in range(self.cfg.batch_size):
            chosen = rng.sample(self.seeds, min(m.num_seed_tasks, len(self.seeds)))
            texts.append(alpaca_prompt([(s.instruction, *s.instances[0]) for s in chosen], m.num_new_tasks))
            firsts.append(len(chosen) + 1)
        for i, gen in enumerate(self._generate(batch, "instructions", texts, m.sampling)):
            for cid, task in self._candidates(batch, i, gen, parse_alpaca_tasks(gen.text, firsts[i])):
                self.ledger.check("format")
                if task.malformed:
                    self.ledger.reject("instruction", "format", task.malformed, candidate_id=cid,
                                       instruction=task.instruction)
                    continue
                if not self._screen(cid, task.instruction):
                    continue
                entry = {"id": cid, "instruction": task.instruction, "batch": batch, "status": "pending",
                         "instances": [{"input": task.input, "output": task.output}]}
                self.ledger.pool.append(entry)
                bad = invalid_instance(Instance(task.input, task.output))
                rows = [] if bad else [{"instruction": task.instruction, "input": task.input, "output": task.output}]
                self._settle(entry, rows, f"the task's output is unusable ({bad})")


def _diff(a: object, b: object, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)]
    return [] if a == b else [path or "<root>"]


def _prepare_output(out: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to mix runs: an existing folder must hold this very run (same settings) to be resumed."""
    if overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for leftover in out.glob(".*.tmp"):  # temporaries of atomic writes cut short by a kill
            if any(leftover.name.startswith(f".{name}.") for name in RUN_FILES):
                shutil.rmtree(leftover, ignore_errors=True)
    state = out / STATE_FILE
    if state.exists():
        saved = json.loads(state.read_text(encoding="utf-8"))
        changed = _diff(saved.get("settings"), settings)
        if changed:
            raise StateError(f"{out} holds a self-instruct run with other settings ({', '.join(changed)}); "
                             "use a new output folder, or --overwrite to start over")
        return
    if out.exists() and any(out.iterdir()):
        raise StateError(f"{out} is not empty and holds no self-instruct run; choose another output folder")
    write_json(state, {"fingerprint": fingerprint(settings), "settings": settings})


def _uses_chat(cfg: SelfInstructConfig) -> bool:
    if cfg.prompt_style != PromptStyle.auto:
        return cfg.prompt_style == PromptStyle.chat
    if cfg.backend.name == "openai":
        return False
    return bool(getattr(load_tokenizer(cfg.model), "chat_template", None))


def _manifest(cfg: SelfInstructConfig, seeds_sha: str, n_seeds: int, chat: bool, batches: _Batches,
              journal: GenerationJournal, status: str) -> dict:
    method = cfg.self_instruct if cfg.method == Method.self_instruct else cfg.alpaca
    sampling = {"instructions": method.sampling.model_dump()}
    if cfg.method == Method.self_instruct:
        sampling |= {"classify": method.classify_sampling.model_dump(), "instances": method.instances_sampling.model_dump()}
    ledger = batches.ledger
    return {
        "kind": "self-instruct",
        "status": status,
        "method": cfg.method.value,
        "model": cfg.model,
        "backend": cfg.backend.name,
        "prompt_style": "chat" if chat else "completion",
        "sampling": sampling,
        "seed": cfg.seed,
        "seeds": {"path": cfg.seeds, "sha256": seeds_sha, "count": n_seeds},
        "target_tasks": cfg.num_tasks,
        "num_prompts": ledger.prompts,
        "batches": ledger.batches,
        "accounting": ledger.accounting(),
        "generation": journal.totals(),
        "pool_size": len(ledger.pool),
        "config": cfg.model_dump(mode="json"),
        "versions": library_versions(),
    }


def run_self_instruct(cfg: SelfInstructConfig, *, overwrite: bool = False,
                      progress: ProgressCallback | None = None) -> SelfInstructResult:
    """Run (or resume) self-instruct into `cfg.output`; returns the folder and its manifest."""
    seeds = load_seed_tasks(cfg.seeds)
    if cfg.backend.name != "openai":
        resolve_model(cfg.model)
    seeds_sha = sha256_file(cfg.seeds)
    out = Path(cfg.output)
    settings = {**cfg.generation_fingerprint_parts(), "seeds": seeds_sha}
    _prepare_output(out, settings, overwrite)
    chat = _uses_chat(cfg)
    journal = GenerationJournal(out / JOURNAL_FILE)
    generator = RecordedGenerator(
        journal, lambda: load_from_options(cfg.backend, cfg.model, cfg.seed))
    batches = _Batches(cfg, seeds, generator, chat)
    ledger = batches.ledger

    def save(status: str) -> dict:
        ledger.write(out)
        manifest = _manifest(cfg, seeds_sha, len(seeds), chat, batches, journal, status)
        write_json(out / MANIFEST_FILE, manifest)
        return manifest

    try:
        batch = 0
        while ledger.accepted < cfg.num_tasks and ledger.prompts < cfg.prompt_budget:
            live = generator.live_calls
            batches.run_batch(batch)
            batch += 1
            if generator.live_calls > live:
                save("incomplete")
            if progress is not None:
                progress(ledger, cfg.num_tasks)
    finally:
        generator.close()
    manifest = save("complete" if ledger.accepted >= cfg.num_tasks else "budget_exhausted")
    return SelfInstructResult(out, manifest)
