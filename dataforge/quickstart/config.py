"""The quickstart's knobs, and the two sizes it ships with.

`full` is what `dataforge quickstart` runs: settings measured to show the domain gain and the
difference in forgetting between the two tunes within the time budget on a 2-core CPU. Measured
(benchmarks/RESULTS.md): domain ROUGE-L 0.071 -> 0.168 (domain-only) / 0.077 (50/50 mix), general
held-out perplexity 359 -> 961 / 468; 150 steps at 3e-3 left the domain-only tune's ROUGE-L below
the base (its answers stopped after the first line), so fewer steps do not show the gain.
`small` keeps every step but shrinks it to seconds, for the end-to-end test; its figures mean
nothing. Any field can be overridden (`--set tune.max_steps=200`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from dataforge.config.base import StrictModel, set_dotted, validate_config
from dataforge.generate.adapters import LoraMode

Size = Literal["full", "small"]


def _backend_name(v: str) -> str:
    """`auto` or a registered backend (the registry owns the names)."""
    from dataforge.errors import ConfigError
    from dataforge.generate.registry import check_name

    if v == "auto":
        return v
    try:
        return check_name(v)
    except ConfigError as exc:
        raise ValueError(exc.problems[0].removeprefix("backend: ")) from None


class BuildKnobs(StrictModel):
    pipeline: str = Field("build_alpaca.yaml", description="Build pipeline YAML: a file of the shipped pipelines/ "
                                                           "folder, or a path. Its output is replaced by the "
                                                           "quickstart folder and its mix by the two below.")
    domain_mix: dict[str, float] = Field(default_factory=lambda: {"domain": 1.0},
                                         description="Train mix of the domain-only tune.")
    mixed_mix: dict[str, float] = Field(default_factory=lambda: {"domain": 0.5, "general": 0.5},
                                        description="Train mix of the mixed tune.")

    @field_validator("domain_mix", "mixed_mix")
    @classmethod
    def _shares(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(x < 0 for x in v.values()) or sum(v.values()) <= 0:
            raise ValueError("shares must be >= 0, with at least one > 0")
        return v


class SelfInstructKnobs(StrictModel):
    pipeline: str = Field("self_instruct.yaml", description="Self-instruct YAML: a file of the shipped pipelines/ "
                                                            "folder, or a path.")
    backend: str = Field("auto", description="Generation engine (a registered backend); auto: vllm when the "
                                             "package is installed, else transformers.")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        return _backend_name(v)
    prompt_style: Literal["completion", "chat"] = Field(
        "completion", description="The tiny model is a base model: plain completion prompts suit it best.")
    num_tasks: int = Field(10, ge=1, description="Target number of new tasks.")
    max_prompts: int = Field(32, ge=1, description="Instruction prompts at most, whatever the target.")
    batch_size: int = Field(8, ge=1, description="Prompts per generation call.")


class TuneKnobs(StrictModel):
    lora_r: int = Field(16, ge=1, description="LoRA rank of both tunes.")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA alpha of both tunes.")
    learning_rate: float = Field(5e-3, gt=0, description="Peak learning rate (cosine decay, 5 % warmup).")
    max_steps: int = Field(200, ge=1, description="Optimizer steps of each tune (the same for both).")
    batch_size: int = Field(8, ge=1, description="Sequences per step.")
    eval_every: int | None = Field(100, ge=1, description="Val loss per source every N steps (the loss curve).")


class EvalKnobs(StrictModel):
    suite: str = Field("regression", description="Eval suite: a shipped suite name or a suite YAML.")
    backend: str = Field("auto", description="Engine of the generation tasks; auto: vllm when installed, else "
                                             "transformers.")
    lora_mode: LoraMode = Field("multi-lora", description="vllm: one engine serves the base and both tunes. At the "
                                "quickstart's few dozen answers per model, two more engine starts (merged "
                                "weights) cost more than LoRA's slower decoding on CPU saves.")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        return _backend_name(v)
    limit: int | None = Field(None, ge=1, description="Score only the first N samples of each task.")
    batch_size: int = Field(16, ge=1, description="Sequences per forward pass.")
    n_boot: int = Field(1000, ge=100, description="Bootstrap replicates of every interval.")


class DpoKnobs(StrictModel):
    """The preference loop of `--with-dpo`. On the demo pairs, 12 steps at 2e-3 take held-out accuracy
    0.5 -> 1.0 and margin 0 -> 36.7 [33.7, 40.1] while general perplexity rises 358 -> 406, inside the
    preference suite's gate; 28 steps at 3e-3 rose it to 551 and failed the gate."""

    enabled: bool = Field(False, description="Also run the preference loop after the report: build the demo "
                                             "pairs, DPO-tune the tiny model, evaluate and compare (`--with-dpo`).")
    pipeline: str = Field("build_dpo.yaml", description="Preference build YAML: a file of the shipped pipelines/ "
                                                        "folder, or a path. Its output is replaced by the "
                                                        "quickstart folder.")
    suite: str = Field("preference", description="Eval suite of base and DPO tune; `${build}` is the preference build.")
    lora_r: int = Field(8, ge=1, description="LoRA rank of the DPO tune.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha of the DPO tune.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate (cosine decay, 2 warmup steps).")
    max_steps: int = Field(12, ge=1, description="Optimizer steps of the DPO tune.")
    batch_size: int = Field(8, ge=1, description="Pairs per step.")
    beta: float = Field(0.1, gt=0, description="DPO beta: how far the tune may move from the reference.")


class QuickstartConfig(StrictModel):
    """One quickstart run: build, self-instruct, two tunes, eval of three models, compare, report."""

    seed: int = Field(1234, description="Seed of every step.")
    model: str = Field("tiny", description="Base model of the self-instruct step and of both tunes.")
    build: BuildKnobs = Field(default_factory=BuildKnobs, description="Dataset build.")
    self_instruct: SelfInstructKnobs = Field(default_factory=SelfInstructKnobs, description="Self-instruct step.")
    tune: TuneKnobs = Field(default_factory=TuneKnobs, description="The two LoRA tunes.")
    eval: EvalKnobs = Field(default_factory=EvalKnobs, description="Evaluation of base and tunes.")
    dpo: DpoKnobs = Field(default_factory=DpoKnobs, description="The optional preference loop (`--with-dpo`).")


SIZES: dict[str, dict] = {
    "full": {},
    "small": {
        "self_instruct": {"num_tasks": 2, "max_prompts": 4, "batch_size": 4, "backend": "transformers"},
        "tune": {"max_steps": 6, "batch_size": 4, "eval_every": 3},
        "eval": {"limit": 4, "n_boot": 100, "backend": "transformers"},
        "dpo": {"max_steps": 2, "batch_size": 4},
    },
}


def quickstart_config(size: Size = "full", overrides: dict | None = None) -> QuickstartConfig:
    """The preset for `size` with dotted-key overrides (`{"tune.max_steps": 50}`), validated as a whole."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    data = {k: dict(v) for k, v in SIZES[size].items()}
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return validate_config(QuickstartConfig, data, f"quickstart ({size})")
