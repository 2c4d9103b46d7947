"""The model being tuned: base weights (full precision or 4-bit), then the method's trainable part.

`lora`, `qlora`, `full`, and every other peft method go through `build_model`, so the training
loop never branches on the method. Choices that depend on the hardware (precision, 4-bit compute
dtype, paged optimizer) are resolved here once and recorded in the run manifest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dataforge.errors import ConfigError, InputError
from dataforge.models import resolve_model
from dataforge.train.config import Optimizer, Precision, TrainConfig, peft_config_class

PROMPT_LEARNING = ("prompt_tuning", "prefix_tuning", "p_tuning", "multitask_prompt_tuning")
DEFAULT_VIRTUAL_TOKENS = 16


@dataclass
class ModelInfo:
    """What was decided while building the model; goes into the manifest."""

    precision: str                     # accelerate mixed_precision: "no", "bf16" or "fp16"
    load_dtype: str
    target_modules: list[str] | None
    trainable_params: int
    total_params: int
    peft_config: dict | None


def resolve_precision(choice: Precision, on_gpu: bool, bf16_ok: bool) -> str:
    """accelerate's mixed_precision value: bf16 where the GPU has it, fp16 on older GPUs, none on CPU."""
    if choice == Precision.auto:
        return ("bf16" if bf16_ok else "fp16") if on_gpu else "no"
    if choice == Precision.fp16 and not on_gpu:
        raise ConfigError("train.precision: fp16 needs a GPU; use fp32 or bf16 on CPU")
    if choice == Precision.bf16 and on_gpu and not bf16_ok:
        raise ConfigError("train.precision: this GPU has no bf16 support; use fp16")
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[choice.value]


def linear_module_names(model) -> list[str]:
    """Leaf names of every linear layer (plain or 4/8-bit) except the output head: LoRA's default targets."""
    import torch

    linear_types: tuple[type, ...] = (torch.nn.Linear,)
    try:
        import bitsandbytes as bnb

        linear_types += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except ImportError:
        pass
    head = model.get_output_embeddings()
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, linear_types) and module is not head}
    if not names:
        raise InputError(f"no linear layers found in {type(model).__name__}; set lora.target_modules")
    return sorted(names)


def disable_cpu_weight_repacking(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for AVX512-BF16 CPUs after a no-grad forward.

    On such CPUs, `Linear4bit.forward` in eval mode rewrites the weight into a CPU-only packed layout;
    afterwards the LoRA layers above it silently receive no gradient and the loss stays flat. An
    eval pass during training triggers it, so every 4-bit layer is opted out. Returns the count.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def _load_dtype(cfg: TrainConfig, precision: str):
    import torch

    if cfg.method == "full" or precision == "no":
        return torch.float32  # full tuning keeps fp32 master weights; autocast does the half-precision math
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _compute_dtype(cfg: TrainConfig, on_gpu: bool, bf16_ok: bool):
    import torch

    choice = cfg.quantization.compute_dtype
    if choice == "auto":
        return torch.bfloat16 if on_gpu and bf16_ok else torch.float32
    return getattr(torch, choice)


def load_base_model(cfg: TrainConfig, precision: str, on_gpu: bool, bf16_ok: bool, device_index: int | None):
    """The base model in the dtype the method trains it in; 4-bit NF4/FP4 for qlora."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BitsAndBytesConfig

    path = resolve_model(cfg.model)
    kwargs: dict[str, Any] = {"dtype": _load_dtype(cfg, precision)}
    auto_class = AutoModelForCausalLM
    if cfg.objective.value == "reward":  # a scalar head on the last real token (pad_token_id finds it)
        auto_class, kwargs["num_labels"] = AutoModelForSequenceClassification, 1
    if cfg.revision:
        kwargs["revision"] = cfg.revision
    if cfg.method == "qlora":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("method: qlora needs bitsandbytes (pip install 'dataforge[qlora]')") from None
        compute = _compute_dtype(cfg, on_gpu, bf16_ok)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=cfg.quantization.quant_type,
            bnb_4bit_use_double_quant=cfg.quantization.double_quant, bnb_4bit_compute_dtype=compute,
            bnb_4bit_quant_storage=compute if on_gpu else None)
        kwargs["dtype"] = compute
        kwargs["device_map"] = {"": device_index if on_gpu else "cpu"}
    try:
        model = auto_class.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise InputError(f"cannot load model '{cfg.model}': {str(exc).splitlines()[0]}") from None
    return model


def _peft_config(cfg: TrainConfig, model, total_steps: int):
    method = "lora" if cfg.method == "qlora" else cfg.method
    config_cls = peft_config_class(method)
    field_names = {f.name for f in dataclasses.fields(config_cls)}
    reward = cfg.objective.value == "reward"
    # SEQ_CLS makes peft train the new scalar head in full (modules_to_save) beside the adapter.
    options: dict[str, Any] = {"task_type": "SEQ_CLS" if reward else "CAUSAL_LM"}
    targets = None
    if method == "lora":
        targets = cfg.lora.target_modules or [n for n in linear_module_names(model) if not (reward and n == "score")]
        options.update(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                       target_modules=targets, use_rslora=cfg.lora.rslora, use_dora=cfg.lora.dora)
    elif method in PROMPT_LEARNING:
        options["num_virtual_tokens"] = DEFAULT_VIRTUAL_TOKENS
    elif method == "adalora":
        options["total_step"] = total_steps
    options.update(cfg.peft_options)
    if targets is None and "target_modules" in field_names and options.get("target_modules") is None:
        targets = _default_targets(method, model)
        if targets is not None:
            options["target_modules"] = targets
    return config_cls(**options), targets


def _default_targets(method: str, model) -> list[str] | None:
    """peft's own per-architecture defaults where it has them (ia3, adalora, ...); else every linear layer."""
    from peft.utils import constants

    table = getattr(constants, f"TRANSFORMERS_MODELS_TO_{method.upper()}_TARGET_MODULES_MAPPING", None)
    if table and model.config.model_type in table:
        return None
    return linear_module_names(model)


def build_model(cfg: TrainConfig, precision: str, total_steps: int, *, on_gpu: bool, bf16_ok: bool,
                device_index: int | None = None):
    """Base model plus the trainable part of the chosen method. Returns (model, ModelInfo)."""
    model = load_base_model(cfg, precision, on_gpu, bf16_ok, device_index)
    model.config.use_cache = False
    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
        disable_cpu_weight_repacking(model)
    elif cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    peft_dict, targets = None, None
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        from peft import get_peft_model

        peft_cfg, targets = _peft_config(cfg, model, total_steps)
        try:
            model = get_peft_model(model, peft_cfg)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"method {cfg.method}: {str(exc).splitlines()[0][:400]}") from None
        peft_dict = peft_cfg.to_dict()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    if trainable == 0:
        raise ConfigError(f"method {cfg.method}: nothing to train (0 trainable parameters)")
    info = ModelInfo(precision=precision, load_dtype=str(_load_dtype(cfg, precision)).replace("torch.", ""),
                     target_modules=targets, trainable_params=trainable, total_params=total, peft_config=peft_dict)
    return model, info


def make_optimizer(cfg: TrainConfig, model, on_gpu: bool):
    """AdamW over the trainable parameters; weight decay skips biases and norm weights (1-D tensors)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    choice = cfg.train.optimizer
    if choice == Optimizer.auto:
        choice = Optimizer.paged_adamw if cfg.method == "qlora" and on_gpu else Optimizer.adamw
    lr = cfg.train.learning_rate
    if choice == Optimizer.adamw:
        return torch.optim.AdamW(groups, lr=lr, fused=on_gpu or None), choice.value
    if not on_gpu:
        raise ConfigError(f"train.optimizer: {choice.value} needs a GPU; use adamw")
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW if choice == Optimizer.paged_adamw else bnb.optim.PagedAdamW8bit
    return cls(groups, lr=lr), choice.value
