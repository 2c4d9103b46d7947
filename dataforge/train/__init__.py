"""Tuning a model on a dataforge build: LoRA, QLoRA, full, or any peft method, resumable after a kill.

The Python API mirrors the CLI:

    from dataforge.train import load_train_config, train, export_run
    result = train(load_train_config("pipelines/train_lora.yaml", {"train.max_steps": 50}))
    export_run(result.output, Path("runs/merged"), merge=True)

Heavy libraries (torch, transformers, peft, accelerate) are imported when a run starts, not here.
"""

from dataforge.train.config import TrainConfig, load_train_config
from dataforge.train.export import export_run
from dataforge.train.loop import TrainingDiverged, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "export_run", "load_train_config", "train"]
