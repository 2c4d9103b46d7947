"""The training config: one pydantic model per section, and `TrainConfig` over them all.

Every field's description is its documentation; `dataforge train --help` lists them. The whole
config is validated before the model is loaded, and every problem is reported with its path
(`train.warmup_ratio: must be between 0 and 1`), as for the build.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from dataforge.config.base import StrictModel, read_yaml_mapping, set_dotted, validate_config
from dataforge.track.config import REPORT_TO_HELP, ReportTo, TrackingSettings
from dataforge.train.pref_loss import LossType

BUILTIN_METHODS = ("lora", "qlora", "full")

# peft config fields that dataforge sets itself; `peft_options` may not override them.
_PEFT_RESERVED = {"task_type", "peft_type", "base_model_name_or_path", "revision", "inference_mode",
                  "auto_mapping", "peft_version"}


def peft_config_class(method: str) -> type | None:
    """The peft config dataclass for a method name (`ia3` -> IA3Config), or None if peft has no such method."""
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    try:
        return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[method.upper()]]
    except KeyError:
        return None


def peft_method_names() -> list[str]:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return sorted(str(k.value).lower() for k in PEFT_TYPE_TO_CONFIG_MAPPING)


class LoraSection(StrictModel):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha/r (alpha/sqrt(r) with rslora).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt (e.g. [q_proj, v_proj]); default: every linear layer of the "
                          "architecture except the output head, found by walking the model.")
    rslora: bool = Field(False, description="Rank-stabilized LoRA: scale by alpha/sqrt(r).")
    dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")


class QuantSection(StrictModel):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base weights (qlora).")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (qlora).")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Dtype of the 4-bit matmuls: auto is bfloat16 on a GPU that supports it, else float32.")


class DataSection(StrictModel):
    path: str = Field(description="A build run folder (from `dataforge build`), or a pipeline YAML that is "
                                  "built first, reusing the build cache.")
    mix: dict[str, float] | None = Field(
        None, description="Train mix by source, e.g. {domain: 0.8, general: 0.2}; overrides the pipeline's "
                          "mix.proportions and is carried out by the build's mix step (needs a pipeline YAML).")
    pack: bool | None = Field(None, description="Override the pipeline's tokenize.pack (needs a pipeline YAML). "
                                                "A packed build trains on packed sequences.")
    batching: Literal["length_grouped", "random"] = Field(
        "length_grouped", description="Unpacked data: group records of similar length into a batch (less "
                                      "padding), or plain shuffled batches. Both are seeded.")

    @field_validator("mix")
    @classmethod
    def _mix_positive(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        bad = [k for k, x in v.items() if x < 0]
        if bad:
            raise ValueError(f"shares must be >= 0 (bad: {', '.join(bad)})")
        if not v or sum(v.values()) <= 0:
            raise ValueError("at least one share must be > 0")
        return v


class Scheduler(str, Enum):
    linear = "linear"
    cosine = "cosine"
    constant = "constant"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Optimizer(str, Enum):
    auto = "auto"
    adamw = "adamw"
    paged_adamw = "paged_adamw"
    paged_adamw_8bit = "paged_adamw_8bit"


class HyperSection(StrictModel):
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    scheduler: Scheduler = Field(Scheduler.cosine, description="Decay after warmup: linear, cosine or constant.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps (use this or warmup_ratio).")
    warmup_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Warmup as a fraction of all optimizer steps.")
    epochs: float = Field(1.0, gt=0, description="Passes over the train split (fractions allowed); ignored when max_steps is set.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps to run; overrides epochs.")
    batch_size: int = Field(8, ge=1, description="Sequences per micro-batch on each process.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step; the loss is averaged over every "
                                                 "trained token of the step, on all processes.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    precision: Precision = Field(Precision.auto, description="auto: bf16 on a GPU that supports it, fp16 on "
                                                             "other GPUs, fp32 on CPU.")
    optimizer: Optimizer = Field(Optimizer.auto, description="auto: paged AdamW for qlora on a GPU, AdamW otherwise.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay (not applied to biases and norms).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm; null: no clipping.")

    @model_validator(mode="after")
    def _one_warmup(self):
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("set warmup_steps or warmup_ratio, not both")
        return self


class EvalSection(StrictModel):
    every_steps: int | None = Field(None, ge=1, description="Evaluate on the val split every N steps (and at "
                                                            "the end); null: only at the start and the end.")
    at_start: bool = Field(True, description="Evaluate before the first step, so the log shows the starting point.")
    batch_size: int = Field(16, ge=1, description="Sequences per eval batch on each process.")


class CheckpointSection(StrictModel):
    every_steps: int = Field(100, ge=1, description="Save a resumable checkpoint every N optimizer steps.")
    keep_last: int = Field(2, ge=1, description="Checkpoints to keep; older ones are deleted.")


class Objective(str, Enum):
    sft = "sft"
    dpo = "dpo"
    kto = "kto"
    reward = "reward"


class PreferenceSection(StrictModel):
    beta: float = Field(0.1, gt=0, description="DPO/KTO: strength of the pull towards the reference model (the "
                                               "base with the adapter off); lower lets the tune drift further.")
    loss_type: LossType = Field(LossType.sigmoid, description="DPO loss: sigmoid (DPO), ipo (squared, on "
                                                              "per-token log-ratios) or hinge (SLiC).")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="DPO sigmoid loss: assumed share of "
                                                                   "mislabelled pairs (conservative DPO); 0 is plain DPO.")
    rpo_alpha: float = Field(0.0, ge=0.0, description="DPO: weight of an SFT term, the mean NLL per chosen token "
                                                      "(RPO), added to limit drift; 0: none.")
    kto_desirable_weight: float = Field(1.0, gt=0, description="KTO: loss weight of desirable completions.")
    kto_undesirable_weight: float = Field(1.0, gt=0, description="KTO: loss weight of undesirable completions.")

    @model_validator(mode="after")
    def _smoothing_sigmoid_only(self):
        if self.label_smoothing and self.loss_type != LossType.sigmoid:
            raise ValueError("label_smoothing applies to loss_type sigmoid only")
        return self


class TrainConfig(StrictModel):
    """A whole training run: model, method, data, hyperparameters, eval and checkpoints."""

    model: str = Field("tiny", description="Base model: 'tiny' (built-in), a local folder or a hub id.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the base model.")
    method: str = Field("lora", description="lora, qlora (4-bit base), full, or any other peft method by "
                                            "name (ia3, prompt_tuning, prefix_tuning, adalora, loha, ...).")
    objective: Objective = Field(Objective.sft, description="What to learn: sft (next-token loss on the "
                                 "responses), dpo (chosen over rejected pairs), kto (completions labelled "
                                 "desirable or not), or reward (a pairwise Bradley-Terry reward model, scalar head). "
                                 "dpo, kto and reward need a preference build (manifest task: preference).")
    preference: PreferenceSection = Field(default_factory=PreferenceSection,
                                          description="DPO/KTO hyperparameters (objective dpo or kto).")
    lora: LoraSection = Field(default_factory=LoraSection, description="LoRA settings (lora and qlora).")
    quantization: QuantSection = Field(default_factory=QuantSection, description="4-bit settings (qlora).")
    peft_options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the peft config for other methods, e.g. "
                                          "{num_virtual_tokens: 16}; checked against the peft config class.")
    data: DataSection = Field(description="Training data.")
    train: HyperSection = Field(default_factory=HyperSection, description="Optimization hyperparameters.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Evaluation on the val split, per source.")
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection, description="Resumable checkpoints.")
    seed: int = Field(1234, description="Seed for initialization, dropout and data order.")
    deterministic: bool = Field(True, description="Use deterministic kernels, so a resumed run matches an "
                                                  "uninterrupted one.")
    log_every: int = Field(1, ge=1, description="Write a train_log.jsonl row every N optimizer steps.")
    report_to: ReportTo = Field(default_factory=list, description=REPORT_TO_HELP)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings, description="Tracker run settings.")
    output: str = Field("runs/train", description="Run folder: adapter/, checkpoints/, train_log.jsonl, manifest.json.")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        v = v.strip().lower()
        if v in BUILTIN_METHODS or peft_config_class(v) is not None:
            return v
        names = sorted(set(BUILTIN_METHODS) | set(peft_method_names()))
        close = difflib.get_close_matches(v, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; choose one of {', '.join(names)}"
        raise ValueError(f"unknown method '{v}'{hint}")

    @model_validator(mode="after")
    def _preference_needs_adapter(self):
        if self.objective in (Objective.dpo, Objective.kto) and self.method == "full":
            raise ValueError("objective dpo/kto uses the base model with the adapter off as its reference; "
                             "choose an adapter method (lora, qlora, ...), not full")
        if self.objective == Objective.reward and self.method not in ("lora", "qlora", "full"):
            raise ValueError("objective reward trains LoRA (or full) with a scalar head; choose lora, qlora or full")
        return self

    @field_validator("peft_options")
    @classmethod
    def _peft_options_fit(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        method = info.data.get("method")
        if not v or method is None:
            return v
        if method == "full":
            raise ValueError("not used by method 'full'")
        config_cls = peft_config_class("lora" if method == "qlora" else method)
        fields = {f.name for f in dataclasses.fields(config_cls)} - _PEFT_RESERVED
        unknown = sorted(set(v) - fields)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(fields), n=1)
                hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise ValueError(f"{config_cls.__name__} has no option {', '.join(hints)}")
        return v


def load_train_config(path: str | os.PathLike | None, overrides: dict | None = None) -> TrainConfig:
    """A train YAML (optional) plus dotted-key overrides, validated as a whole.

    A relative `data.path` is looked up next to the YAML first, then in the working directory, as
    the build does for its inputs, so a shipped train YAML finds the pipeline YAML beside it.
    """
    data: dict = {}
    if path is not None:
        data = read_yaml_mapping(path)
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    data_path = data.get("data", {}).get("path") if isinstance(data.get("data"), dict) else None
    if path is not None and isinstance(data_path, str) and not Path(data_path).is_absolute():
        beside = Path(path).resolve().parent / data_path
        if beside.exists():
            data["data"]["path"] = str(beside)
    return validate_config(TrainConfig, data, str(path) if path is not None else "(flags)")
