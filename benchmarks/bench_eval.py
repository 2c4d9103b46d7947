"""Multiple-choice scoring and perplexity: dataforge against lm-evaluation-harness, same model and data, one process.

    .venv/bin/python benchmarks/bench_eval.py                       # the tiny model, the leaderboard fixtures
    .venv/bin/python benchmarks/bench_eval.py --model PATH --batch-size 32 --device cuda

Data: the shipped leaderboard suite (evals/leaderboard.yaml: ARC-Easy/Challenge 25-shot, HellaSwag
10-shot, MMLU 5-shot over 57 subjects, TruthfulQA MC1/MC2) on its fixture files, and the first
paragraphs of dataforge/assets/corpus/general_heldout.txt for perplexity.

1. Scoring: lm-eval's `HFLM.loglikelihood` and dataforge's `HFLanguageModel.loglikelihood` get the
   very same (context, continuation) requests, the ones lm-eval itself built for these tasks, with
   the same batch size. Both return one float per request; the largest difference is printed.
2. End to end: `lm_eval.simple_evaluate` on lm-eval's own task configs pointed at the same files
   (dataforge.eval.lm_eval_parity) against `dataforge.eval.runner.run_suite` (no cache), with every
   task's acc / acc_norm / MC2 from both. Both include reading the data and building the prompts.
3. Perplexity: `loglikelihood_rolling` of both on the same texts (windows of the model's length).

Models are loaded before the clocks start; each timed step runs once after a small warm-up.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from dataforge.eval.config import EvalOptions  # noqa: E402
from dataforge.eval.lm_eval_parity import lm_eval_scores  # noqa: E402
from dataforge.eval.results import load_results  # noqa: E402
from dataforge.eval.runner import run_suite  # noqa: E402
from dataforge.eval.serving import load_targets  # noqa: E402
from dataforge.eval.tasks import load_suite  # noqa: E402
from dataforge.models import resolve_model  # noqa: E402
from dataforge.paths import ASSETS_DIR, evals_dir  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--paragraphs", type=int, default=200, help="perplexity documents")
    args = ap.parse_args()

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    suite = load_suite(evals_dir() / "leaderboard.yaml")
    options = EvalOptions(batch_size=args.batch_size, device=args.device, cache_dir=None, n_boot=100, progress=False)
    targets, tokenizer = load_targets(args.model, None, Path(tempfile.mkdtemp()) / "res", None, options)
    ours = targets[0].lm
    theirs = HFLM(pretrained=resolve_model(args.model), dtype="float32", batch_size=args.batch_size, device=args.device)
    warm = [("Warm-up context for both models.", " yes"), ("Warm-up context for both models.", " no")]
    ours.loglikelihood(warm)
    theirs.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(warm)], disable_tqdm=True)

    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    lm_run, t_lm_e2e = timed(lambda: lm_eval_scores(suite.tasks, theirs, work / "lm_eval"))
    targets[0].out = work / "dataforge"
    _, t_df_e2e = timed(lambda: run_suite(suite, targets, options, tokenizer))
    res = load_results(work / "dataforge")

    print(f"\n1. loglikelihood scoring, same requests, batch size {args.batch_size}")
    print(f"{'task':<16}{'requests':>9}{'lm-eval s':>11}{'dataforge s':>13}{'speedup':>9}{'max |dll|':>11}")
    tot_lm = tot_df = 0.0
    for task in suite.tasks:
        requests = [r for doc in lm_run.requests[task.name] for r in doc]
        inst = [Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)]
        want, t_lm = timed(lambda inst=inst: [x[0] for x in theirs.loglikelihood(inst, disable_tqdm=True)])
        got, t_df = timed(lambda requests=requests: ours.loglikelihood(requests))
        tot_lm, tot_df = tot_lm + t_lm, tot_df + t_df
        diff = max(abs(a - b) for a, b in zip(got, want, strict=True))
        print(f"{task.name:<16}{len(requests):>9}{t_lm:>11.2f}{t_df:>13.2f}{t_lm / t_df:>8.1f}x{diff:>11.1e}")
    print(f"{'all':<16}{'':>9}{tot_lm:>11.2f}{tot_df:>13.2f}{tot_lm / tot_df:>8.1f}x")

    print("\n2. end to end (read data, build prompts, score, aggregate)")
    print(f"{'task':<16}{'metric':<11}{'lm-eval':>10}{'dataforge':>11}{'|diff|':>10}")
    worst = 0.0
    for name, metrics in lm_run.scores.items():
        for metric, value in metrics.items():
            mine = res.value(name, metric)
            worst = max(worst, abs(mine - value))
            print(f"{name:<16}{metric:<11}{value:>10.4f}{mine:>11.4f}{abs(mine - value):>10.1e}")
    print(f"wall: lm-eval {t_lm_e2e:.1f} s, dataforge {t_df_e2e:.1f} s ({t_lm_e2e / t_df_e2e:.1f}x); "
          f"largest metric difference {worst:.1e} ({'equal' if worst <= 1e-4 else 'NOT equal'} within 1e-4)")

    text = (ASSETS_DIR / "corpus" / "general_heldout.txt").read_text(encoding="utf-8")
    docs = [p.strip() for p in text.split("\n\n") if p.strip()][:args.paragraphs]
    docs.append(text)        # one long document, many windows
    inst = [Instance("loglikelihood_rolling", {}, (d,), i) for i, d in enumerate(docs)]
    want, t_lm = timed(lambda: theirs.loglikelihood_rolling(inst, disable_tqdm=True))
    got, t_df = timed(lambda: ours.loglikelihood_rolling(docs))
    ll_lm, ll_df = sum(want), sum(s.ll for s in got)
    print(f"\n3. perplexity: {len(docs)} documents, {sum(s.n_tokens for s in got):,} tokens")
    print(f"total ll: lm-eval {ll_lm:.4f}, dataforge {ll_df:.4f} (relative difference {abs(ll_lm - ll_df) / abs(ll_lm):.1e}); "
          f"max per-document |dll| {max(abs(a - b.ll) for a, b in zip(want, got, strict=True)):.1e}")
    print(f"time: lm-eval {t_lm:.2f} s, dataforge {t_df:.2f} s ({t_lm / t_df:.1f}x)")


if __name__ == "__main__":
    main()
