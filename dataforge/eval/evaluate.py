"""`evaluate(EvalConfig)`: the Python API of `dataforge eval`, as `run_build(cfg)` and `train(cfg)` are
of theirs. The CLI only turns flags into an `EvalConfig` and prints what this returns.

    from dataforge.eval.config import EvalConfig
    from dataforge.eval.evaluate import evaluate

    run = evaluate(EvalConfig(suite="regression", model="tiny", out="runs/eval/tuned",
                              adapters=["runs/train/adapter"], base_out="runs/eval/base",
                              options={"backend": "vllm"}))
    run.folders, run.summary
"""

from __future__ import annotations

from dataclasses import replace

from dataforge.config.suite import resolve_suite
from dataforge.eval.config import EvalConfig
from dataforge.eval.runner import SuiteRun, run_suite
from dataforge.eval.tasks import Suite


def load_eval_suite(cfg: EvalConfig) -> Suite:
    """The suite with every split it reads checked, so a missing file fails before the model loads."""
    from dataforge.eval.tasks import check_suite_data, load_suite

    suite = load_suite(resolve_suite(cfg.suite), cfg.vars, only=cfg.tasks or None)
    if cfg.num_fewshot is not None:
        suite = with_shots(suite, cfg.num_fewshot)
    check_suite_data(suite)
    return suite


def with_shots(suite: Suite, shots: int) -> Suite:
    """Every multiple-choice task with `shots` examples (so the suite's fingerprint changes with it);
    a task type without examples takes only 0."""
    from dataforge.errors import ConfigError

    others = [t.name for t in suite.tasks if "shots" not in type(t.spec).model_fields]
    if shots and others:
        raise ConfigError(f"num_fewshot {shots}: task(s) {', '.join(others)} take no few-shot examples; "
                          f"run them apart (--task) or with num_fewshot 0")
    tasks = tuple(replace(t, spec=t.spec.model_copy(update={"shots": shots})) if t.name not in others else t
                  for t in suite.tasks)
    return replace(suite, tasks=tasks)


def evaluate(cfg: EvalConfig, suite: Suite | None = None) -> tuple[Suite, SuiteRun]:
    """Score the suite for every target of `cfg`, write the results folders and record them in the
    history store. Returns the suite and what the run produced (folders, headline numbers)."""
    from dataforge.eval.serving import load_targets

    suite = suite or load_eval_suite(cfg)
    targets, tokenizer = load_targets(cfg.model, cfg.adapters, cfg.adapter_outs(), cfg.base_out, cfg.options,
                                      cfg.noise_runs())
    try:
        run = run_suite(suite, targets, cfg.options, tokenizer)
    finally:
        for t in targets:
            t.lm.close()
        for shared in {id(t.shared): t.shared for t in targets if t.shared is not None}.values():
            shared.close()
    if cfg.report_to:
        from dataforge.track.config import TrackingConfig
        from dataforge.track.report import report_eval

        report_eval(TrackingConfig.of(cfg.report_to, cfg.tracking), run.folders)
    if cfg.history:
        from dataforge.eval.history import record_run

        reruns = {folder for _, folder in cfg.noise_runs()}      # noise-floor re-runs are not tunes
        for folder in run.folders:
            if folder not in reruns:
                record_run(folder, cfg.history_db, series=cfg.series)
    if cfg.format == "lm-eval":
        from dataforge.eval.lm_eval_io import write_lm_eval_results

        for folder in run.folders:
            write_lm_eval_results(folder)
    return suite, run
