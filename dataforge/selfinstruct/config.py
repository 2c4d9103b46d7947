"""`dataforge self-instruct` config. Every default is the paper's (Wang et al. 2022) or Alpaca's.

The `self_instruct` and `alpaca` sections each hold the settings of one method; `method` picks which
runs. The field descriptions below feed `dataforge self-instruct --help`.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import Field, model_validator

from dataforge.config.base import StrictModel
from dataforge.generate.base import SamplingParams
from dataforge.generate.registry import BackendOptions, default_options


class Method(str, Enum):
    self_instruct = "self_instruct"
    alpaca = "alpaca"


class PromptStyle(str, Enum):
    auto = "auto"
    completion = "completion"
    chat = "chat"


class Sampling(StrictModel):
    """Sampling of one generation step; each step below sets the paper's values as its defaults, so
    `--set self_instruct.sampling.max_tokens=256` changes one knob and keeps the rest."""

    temperature: float = Field(0.0, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, description="Maximum new tokens per completion.")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Additive penalty on tokens already generated.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="Additive penalty per repetition of a generated token.")
    stop: list[str] = Field(default_factory=list, description="Stop strings (cut from the text).")

    def params(self, seed: int) -> SamplingParams:
        return SamplingParams(n=1, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              stop=tuple(self.stop), seed=seed, presence_penalty=self.presence_penalty,
                              frequency_penalty=self.frequency_penalty)


class InstructionSampling(Sampling):
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (the paper: 0.7).")
    top_p: float = Field(0.5, gt=0, le=1, description="Nucleus sampling mass (the paper: 0.5).")
    max_tokens: int = Field(1024, ge=1, description="Maximum new tokens per completion (the paper: 1024).")
    presence_penalty: float = Field(2.0, ge=-2, le=2, description="Additive penalty on tokens already generated (the paper: 2).")
    stop: list[str] = Field(default_factory=lambda: ["\n\n", "\n16", "16.", "16 ."],
                            description="Stop at a blank line or at item 16 (the paper's).")


class ClassifySampling(Sampling):
    max_tokens: int = Field(3, ge=1, description="Maximum new tokens of the yes/no answer.")
    stop: list[str] = Field(default_factory=lambda: ["\n", "Task:"], description="Stop strings (cut from the text).")


class InstanceSampling(Sampling):
    max_tokens: int = Field(300, ge=1, description="Maximum new tokens of a task's instances.")
    stop: list[str] = Field(default_factory=lambda: ["Example 16", "Task:"], description="Stop strings (cut from the text).")


class AlpacaSampling(Sampling):
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (Alpaca: 1.0).")
    max_tokens: int = Field(3072, ge=1, description="Maximum new tokens per completion (Alpaca: 3072).")
    stop: list[str] = Field(default_factory=lambda: ["\n20", "20."], description="Stop at task 20 (Alpaca's).")


class SelfInstructMethod(StrictModel):
    num_seed_tasks: int = Field(6, ge=1, description="Human seed instructions per prompt (the paper: 6).")
    num_machine_tasks: int = Field(2, ge=0, description="Machine-generated instructions per prompt (the paper: 2); seeds fill in while the pool is smaller.")
    sampling: InstructionSampling = Field(default_factory=InstructionSampling, description="Instruction generation sampling.")
    classify_sampling: ClassifySampling = Field(default_factory=ClassifySampling, description="Sampling for the 'is it classification?' question.")
    classify_examples: int = Field(12, ge=0, description="Few-shot examples in the classification question.")
    instances_sampling: InstanceSampling = Field(default_factory=InstanceSampling, description="Sampling for instance generation.")
    instance_examples: int = Field(6, ge=0, description="Few-shot examples in each instance-generation prompt.")
    max_instances: int = Field(5, ge=1, description="Keep at most this many unique instances per task.")


class AlpacaMethod(StrictModel):
    num_seed_tasks: int = Field(3, ge=1, description="Seed tasks (with input and output) per prompt (Alpaca: 3).")
    num_new_tasks: int = Field(20, ge=2, description="Tasks the prompt asks for, counting the seed tasks (Alpaca: 20).")
    sampling: AlpacaSampling = Field(default_factory=AlpacaSampling, description="Instruction generation sampling.")


class FiltersConfig(StrictModel):
    novelty_threshold: float = Field(0.7, gt=0, le=1, description="Reject when ROUGE-L F against any pool instruction is >= this.")
    use_stemmer: bool = Field(False, description="Porter-stem tokens before ROUGE-L (rouge_score's use_stemmer).")
    keywords: list[str] = Field(
        default_factory=lambda: ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
                                 "map", "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart",
                                 "diagram"],
        description="Reject instructions containing any of these as whole words, ignoring case.")
    banned_prefixes: list[str] = Field(default_factory=lambda: ["Write a program"],
                                       description="Reject instructions starting with any of these, ignoring case.")
    min_words: int = Field(4, ge=1, description="Reject instructions with fewer words (the paper: 3 words or fewer).")
    max_words: int = Field(150, ge=1, description="Reject instructions with more words.")
    start: bool = Field(True, description="Reject instructions starting with punctuation or a non-ASCII character.")

    @model_validator(mode="after")
    def _order(self):
        if self.min_words > self.max_words:
            raise ValueError("min_words must be <= max_words")
        return self


class SelfInstructConfig(StrictModel):
    """A self-instruct run: seeds + model -> a folder of new tasks (Alpaca jsonl), pool, rejects, manifest."""

    seeds: str = Field(description="Seed tasks: Self-Instruct jsonl (instruction, instances, is_classification) or Alpaca json/jsonl.")
    output: str = Field("runs/self-instruct", description="Output folder; an existing run there is resumed.")
    model: str = Field("tiny", description="Model: 'tiny' (built-in), a local folder, a hub id, or the endpoint's model name.")
    backend: BackendOptions = Field(default_factory=default_options,
                                    description="Generation engine and its options; `name` picks the engine.")
    method: Method = Field(Method.self_instruct, description="self_instruct (Wang et al. 2022) or alpaca (Stanford Alpaca).")
    prompt_style: PromptStyle = Field(PromptStyle.auto, description="completion (plain prompt), chat (chat template), or auto: chat when the model has a chat template.")
    num_tasks: int = Field(100, ge=1, description="Target number of accepted tasks; the run stops there.")
    max_prompts: int | None = Field(None, ge=1, description="Stop after this many instruction prompts even below the target (checked between batches); default 20 x num_tasks.")
    batch_size: int = Field(8, ge=1, description="Instruction prompts per generation call; progress is saved after each.")
    seed: int = Field(42, description="Seed for prompt sampling and generation.")
    self_instruct: SelfInstructMethod = Field(default_factory=SelfInstructMethod)
    alpaca: AlpacaMethod = Field(default_factory=AlpacaMethod)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)

    @property
    def prompt_budget(self) -> int:
        return self.max_prompts if self.max_prompts is not None else 20 * self.num_tasks

    def generation_fingerprint_parts(self) -> dict:
        """Everything that changes which prompts are built or which texts are kept: a resumed run must
        match on all of it. The target, the budget and the engine may change between runs of one
        folder: every recorded completion stays valid, whichever engine (serving the same model) made it."""
        data = self.model_dump(mode="json")
        for key in ("output", "num_tasks", "max_prompts", "backend"):
            data.pop(key)
        adapter = getattr(self.backend, "adapter", None)
        if adapter is not None:      # a tune is another model: its content, wherever its folder is
            from dataforge.util.fingerprint import sha256_tree

            data["adapter"] = sha256_tree(adapter) if Path(adapter).is_dir() else adapter
        return data
