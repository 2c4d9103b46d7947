"""`dataforge eval` config: what to score (`EvalConfig`) and how (`EvalOptions`).

Validated like every config of the project, so the CLI, YAML-driven callers and the Python API
(`dataforge.eval.evaluate.evaluate`) share one set of rules and error messages with field paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from dataforge.config.base import StrictModel
from dataforge.generate.adapters import LoraMode
from dataforge.generate.registry import check_name
from dataforge.track.config import REPORT_TO_HELP, ReportTo, TrackingSettings

Quantize = Literal["none", "8bit", "4bit"]


class EvalOptions(StrictModel):
    """How every target of one eval is scored; part of each results folder's manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    batch_size: int = Field(16, ge=1, description="Sequences per forward pass (and prompts per generation call).")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("float32", description="Weights dtype.")
    device: str | None = Field(None, description="Device (default: cuda when available, else cpu).")
    backend: str = Field("transformers", description="Generation backend of generation tasks (transformers, vllm, "
                                                     "openai); loglikelihood tasks always run on transformers.")
    lora_mode: LoraMode = Field("auto", description="vllm: serve each adapter from a cached merge of base + "
                                "adapter (merged), from one engine with enable_lora (multi-lora), or auto: "
                                "multi-lora on a GPU with two or more adapters, merged otherwise.")
    quantize: Quantize = Field("none", description="Evaluate a bitsandbytes 8-bit or 4-bit copy of the model "
                               "(and its adapter); generation then runs on transformers.")
    limit: int | None = Field(None, ge=1, description="Score only the first N samples of each task.")
    seed: int = Field(1234, description="Seed of generation and of the bootstrap intervals.")
    n_boot: int = Field(1000, ge=100, description="Bootstrap replicates for the confidence intervals.")
    cache_dir: Path | None = Field(None, description="Per-sample cache; None disables it.")
    progress: bool = Field(True, description="Show the progress display.")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from dataforge.errors import ConfigError

        try:
            return check_name(v)
        except ConfigError as exc:
            raise ValueError(exc.problems[0].removeprefix("backend: ")) from None


class EvalConfig(StrictModel):
    """One `dataforge eval` call: a suite, a model and its adapters, and where the results go."""

    suite: str = Field(description="Suite YAML, or the name of a suite shipped in evals/.")
    model: str = Field(description="Base model: 'tiny', a local folder or a hub id.")
    out: Path = Field(description="Results folder of the model (with its adapter); with several adapters, the "
                                  "folder holding one results folder per adapter, named after it.")
    adapters: list[str] = Field(default_factory=list, description="peft adapter folders to evaluate on the model; a "
                                "glob ('runs/x/checkpoints/*') stands for every adapter or checkpoint it matches, "
                                "in natural order.")
    base_out: Path | None = Field(None, description="Also evaluate the model without adapters into this folder.")
    noise_seeds: list[int] = Field(default_factory=list, description="Re-run the base (the model without adapters) "
                                   "with each of these seeds into <base folder>-seed<N>, without the sample cache, "
                                   "for the noise floor of `dataforge compare --noise`.")
    vars: dict[str, str] = Field(default_factory=dict, description="Suite variables for ${NAME} in task data paths.")
    tasks: list[str] = Field(default_factory=list, description="Run only these tasks of the suite (all when empty).")
    options: EvalOptions = Field(default_factory=EvalOptions, description="How the targets are scored.")
    num_fewshot: int | None = Field(None, ge=0, description="Solved examples before each multiple-choice question, "
                                    "replacing every such task's `shots` (lm-eval's --num_fewshot).")
    format: Literal["dataforge", "lm-eval"] = Field(
        "dataforge", description="dataforge: the results folder; lm-eval: also an lm-eval-style results.json in "
                                 "it, for dashboards that read lm-eval's results files.")
    history: bool = Field(True, description="Record the run(s) in the history store.")
    series: str | None = Field(None, description="History series of successive tunes.")
    history_db: Path | None = Field(None, description="History store (default under $DATAFORGE_HOME).")
    report_to: ReportTo = Field(default_factory=list, description=REPORT_TO_HELP)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings, description="Tracker run settings.")

    @field_validator("adapters")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        from dataforge.eval.checkpoints import expand_adapters

        v = expand_adapters(v)
        if len(set(v)) != len(v):
            raise ValueError("the same adapter is given twice")
        return v

    @field_validator("base_out")
    @classmethod
    def _base_out(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is None:
            return v
        if not info.data.get("adapters"):
            raise ValueError("compares a model with and without its adapter (--base-out); give --adapter too")
        if "out" in info.data and v.resolve() == Path(info.data["out"]).resolve():
            raise ValueError("must be another folder than out (--base-out and --out)")
        return v

    @model_validator(mode="after")
    def _noise_seeds(self) -> EvalConfig:
        if len(set(self.noise_seeds)) != len(self.noise_seeds):
            raise ValueError("noise_seeds: the same seed is given twice")
        if self.options.seed in self.noise_seeds:
            raise ValueError(f"noise_seeds: {self.options.seed} is the run's own seed (--seed); a re-run needs another")
        if self.noise_seeds and self.adapters and self.base_out is None:
            raise ValueError("noise_seeds re-run the base model: give base_out (--base-out) too")
        return self

    def noise_runs(self) -> list[tuple[int, Path]]:
        """(seed, results folder) of each re-run of the base: `<base folder>-seed<N>` beside it."""
        base = self.base_out if self.adapters else self.out
        return [(s, base.parent / f"{base.name}-seed{s}") for s in self.noise_seeds]

    def adapter_outs(self) -> list[Path]:
        """One results folder per adapter: `out` itself for one, `out/<folder name>` for several."""
        if len(self.adapters) <= 1:
            return [self.out]
        # a train run keeps its adapter in <run>/adapter: the run's name tells the tunes apart
        names = [(p.parent.name if p.name == "adapter" else p.name) or f"adapter{i}"
                 for i, p in enumerate(Path(a).resolve() for a in self.adapters)]
        return [self.out / (n if names.count(n) == 1 else f"{n}-{i}") for i, n in enumerate(names)]
