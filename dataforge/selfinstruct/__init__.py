"""Self-Instruct and Alpaca-style task generation: `run_self_instruct(SelfInstructConfig(...))`."""
