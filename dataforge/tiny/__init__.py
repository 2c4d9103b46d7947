"""The built-in tiny model and what ships with it: its pretraining corpus, its build, and the demo data.

Nothing here is needed to tune or evaluate a real model; it exists so that every command has a model
and data to run on without a download, in tests, CI and `dataforge quickstart`.
"""
