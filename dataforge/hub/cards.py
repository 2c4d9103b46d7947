"""Dataset and model cards (README.md with the YAML front matter the Hub reads), written from the
manifests alone, so every number on a card is one the run recorded.

A build card lists the sources with their counts per split, the rejects by reason and source, what
deduplication and decontamination removed, and the template. A model card adds the base model, the
method, the training numbers and, given a comparison, the table of deltas against the base.
"""

from __future__ import annotations

from typing import Any

import yaml

DEDUP_STEPS = ("dedupe_exact", "dedupe_near", "dedupe_reference", "decontaminate")


def front_matter(meta: dict[str, Any]) -> str:
    return "---\n" + yaml.safe_dump({k: v for k, v in meta.items() if v not in (None, [], {})},
                                    sort_keys=False, allow_unicode=True) + "---\n"


def _num(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_num(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for n rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M" if n > 10_000_000 else "1M<n<10M"


def build_sections(manifest: dict) -> str:
    """Sources, rejects by reason, dedup/decontamination and template of a build manifest."""
    sources = manifest.get("sources") or {}
    splits = list(manifest.get("splits") or {})
    files = {row["source"]: row.get("path") for row in manifest.get("inputs") or []}
    out = ["## Sources\n\n",
           _table(["source", "input", "read", "kept", "rejected", *splits],
                  [[s, (files.get(s) or "").rsplit("/", 1)[-1], v.get("read"), v.get("kept"), v.get("rejected"),
                    *[v.get("by_split", {}).get(sp, 0) for sp in splits]] for s, v in sources.items()])]
    reasons = sorted({r for v in sources.values() for r in v.get("rejected_by_reason") or {}})
    if reasons:
        out += ["\n## Rejected records by reason\n\n",
                _table(["reason", *sources, "total"],
                       [[r, *[v.get("rejected_by_reason", {}).get(r, 0) for v in sources.values()],
                         sum(v.get("rejected_by_reason", {}).get(r, 0) for v in sources.values())] for r in reasons])]
    steps = [s for s in manifest.get("steps") or [] if s.get("name") in DEDUP_STEPS]
    if steps:
        out += ["\n## Deduplication and decontamination\n\n",
                _table(["step", "in", "out", "removed", "by reason"],
                       [[s["name"], s.get("in"), s.get("out"), (s.get("in") or 0) - (s.get("out") or 0),
                         ", ".join(f"{k} {v}" for k, v in (s.get("dropped") or {}).items())] for s in steps])]
    out.append("\n" + template_section(manifest.get("template"), manifest.get("tokenize")))
    return "".join(out)


def template_section(template: dict | None, tokenize: dict | None = None) -> str:
    if not template:
        return "## Template\n\nNo prompt template (the build stopped before the template step).\n"
    lines = ["## Template\n", f"- name: `{template.get('name')}`", f"- sha256: `{template.get('sha256')}`",
             f"- header variants: {'yes' if template.get('variants') else 'no'}"]
    if tokenize:
        lines += [f"- tokenizer: `{tokenize.get('tokenizer')}`, max_length {tokenize.get('max_length')}, "
                  f"packed: {'yes' if tokenize.get('packed') else 'no'}"]
    return "\n".join(lines) + "\n"


def dataset_card(manifest: dict, repo_id: str) -> str:
    splits = manifest.get("splits") or {}
    meta = {
        "pretty_name": repo_id.rsplit("/", 1)[-1],
        "tags": ["dataforge", "instruction-tuning"],
        "task_categories": ["text-generation"],
        "size_categories": [size_category(sum(splits.values()))],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"splits/{s}.parquet"} for s, n in splits.items() if n]}],
    }
    head = (f"# {repo_id.rsplit('/', 1)[-1]}\n\nAn instruction-tuning dataset built with dataforge "
            f"{manifest.get('dataforge_version', '')}: fingerprint `{manifest.get('fingerprint')}`, seed "
            f"{manifest.get('seed')}, {sum(splits.values())} records ("
            + ", ".join(f"{s} {n}" for s, n in splits.items()) + f"); {manifest.get('rejected', 0)} records rejected.\n\n"
            "Each split is `splits/<split>.parquet` (record fields plus the rendered `prompt` and `response`); "
            "`manifest.json` is the full build record, `rejects.jsonl` every dropped record with its reason.\n\n")
    return front_matter(meta) + head + build_sections(manifest)


def compare_section(comp: dict) -> str:
    """The per-task deltas of `dataforge compare --json` against the base, with their CIs."""
    rows = []
    for task, t in comp["tasks"].items():
        for name, d in t["metrics"].items():
            rows.append([f"{task} ({t['tag']})", name + (" *" if name == t["primary_metric"] else ""), d["base"],
                         d["tuned"], d["delta"], f"[{_num(d['ci_low'])}, {_num(d['ci_high'])}]", d["p_value"],
                         d["verdict"]])
    conf = comp.get("confidence", 0.95)
    return ("## Evaluation against the base model\n\n"
            f"Suite `{comp.get('suite')}`; paired bootstrap over samples matched by prompt, {comp.get('n_boot')} "
            f"replicates, seed {comp.get('seed')}; * marks each task's primary metric.\n\n"
            + _table(["task", "metric", "base", "tuned", "Δ", f"{conf:.0%} CI", "p", "change"], rows))


def eval_section(metrics: dict) -> str:
    rows = [[task, name + (" *" if name == e.get("primary_metric") else ""), m.get("value"),
             f"[{_num(m.get('ci_low'))}, {_num(m.get('ci_high'))}]", e.get("n")]
            for task, e in metrics.items() for name, m in e.get("metrics", {}).items()]
    return _table(["task", "metric", "value", "95% CI", "n"], rows)


def model_card(train: dict, repo_id: str, *, build: dict | None, comp: dict | None, merged: bool = False) -> str:
    """A card for an adapter (or a merged/full model) from its train manifest."""
    base = train["base_model"]
    base_id = base.get("name") if base.get("path") is None else None  # only a hub id is a valid base_model
    peft = train["weights"]["kind"] == "peft_adapter" and not merged
    stats = train.get("stats") or {}
    meta = {"library_name": "peft" if peft else "transformers", "base_model": base_id,
            "pipeline_tag": "text-generation", "tags": ["dataforge", train["method"]] + (["lora"] if "lora" in train["method"] else [])}
    name = repo_id.rsplit("/", 1)[-1]
    lines = [f"# {name}\n",
             f"{'A ' + train['method'] + ' adapter for' if peft else 'A ' + train['method'] + ' tune of'} "
             f"`{base.get('name')}`{' merged into its base weights' if merged else ''}, trained with dataforge "
             f"{train.get('dataforge_version', '')} on data fingerprint `{train['data']['fingerprint']}`.\n",
             "## Training\n",
             _table(["setting", "value"], [
                 ["base model", base.get("name")], ["method", train["method"]],
                 ["steps", train.get("total_steps")], ["learning rate", train["config"]["train"]["learning_rate"]],
                 ["batch size × grad accum × processes", f"{train['config']['train']['batch_size']} × "
                  f"{train['config']['train']['grad_accum']} × {train.get('world_size')}"],
                 ["train rows", train["data"]["train_rows"]], ["val rows", train["data"]["val_rows"]],
                 ["final train loss", stats.get("final_loss")],
                 *[[k.removeprefix("final_"), v] for k, v in stats.items() if k.startswith("final_eval")],
                 ["seed", train["config"]["seed"]]]),
             "\n### Training data by source\n",
             _table(["source", "train rows"], [[s, n] for s, n in (train["data"].get("train_by_source") or {}).items()])]
    if build is not None:
        lines.append("\n" + build_sections(build).replace("## ", "### "))
    else:
        lines.append("\n" + template_section(train.get("template")))
    lines.append("\nThe tokenizer's chat template (`chat_template.jinja`) renders this prompt format, so "
                 "`apply_chat_template` prompts the model the way it was trained.\n")
    if comp is not None:
        lines.append("\n" + compare_section(comp))
    usage = (f"```python\nfrom peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
             f"model = AutoPeftModelForCausalLM.from_pretrained(\"{repo_id}\")\ntokenizer = AutoTokenizer.from_pretrained(\"{repo_id}\")\n```\n"
             if peft else
             f"```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
             f"model = AutoModelForCausalLM.from_pretrained(\"{repo_id}\")\ntokenizer = AutoTokenizer.from_pretrained(\"{repo_id}\")\n```\n")
    lines.append("\n## Usage\n\n" + usage)
    return front_matter(meta) + "\n".join(lines)


def eval_card(manifest: dict, metrics: dict, repo_id: str) -> str:
    meta = {"pretty_name": repo_id.rsplit("/", 1)[-1], "tags": ["dataforge", "evaluation"]}
    suite = manifest.get("suite") or {}
    head = (f"# {repo_id.rsplit('/', 1)[-1]}\n\nEvaluation results from dataforge: model `{manifest.get('model')}`"
            + (f", adapter `{manifest.get('adapter')}`" if manifest.get("adapter") else "")
            + f", suite `{suite.get('name')}` (fingerprint `{suite.get('fingerprint')}`), seed {manifest.get('seed')}, "
            f"{manifest.get('n_boot')} bootstrap replicates; * marks each task's primary metric. `metrics.json` holds "
            "every value with its CI, `samples/` one row per scored sample.\n\n")
    return front_matter(meta) + head + eval_section(metrics)
