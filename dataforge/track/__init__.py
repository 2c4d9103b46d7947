"""Experiment trackers (W&B, MLflow, TensorBoard) for train, eval and compare: `report_to`."""
