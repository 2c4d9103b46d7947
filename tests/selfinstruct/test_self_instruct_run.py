"""End-to-end self-instruct runs on the tiny model, and with known completions written into the journal."""

from __future__ import annotations

import json

import pytest
from rouge_score import rouge_scorer
from si_helpers import FIXTURES, drop_recorded, read_jsonl, set_recorded, small_config

from dataforge.errors import StateError
from dataforge.generate import GenerationError
from dataforge.selfinstruct.parse import parse_alpaca_tasks, parse_numbered_instructions
from dataforge.selfinstruct.run import run_self_instruct
from dataforge.selfinstruct.seeds import load_seed_tasks

SEED_CLF = "Classify the sentiment of the review as positive or negative."
SKY = "Explain why the sky looks blue during the day."
EVEN = "Tell me whether the number is even or odd."
COMPLETION = "\n".join([
    f" {SKY}",
    "10. Draw a map of your neighborhood.",
    "11. Hi there",
    "12. - Start with a dash and then list items.",
    f"13. {SEED_CLF}",
    f"14. {EVEN}",
    "15. Explain why the sky looks blue during the day time.",
])


def test_known_completions_flow_through_filters_instances_and_outputs(tmp_path):
    out = tmp_path / "run"
    cfg = small_config(out)
    run_self_instruct(cfg)                      # 1: the tiny model writes junk for batch 0
    set_recorded(out, "b00000/instructions", [COMPLETION])
    run_self_instruct(cfg)                      # 2: replays our list; classifies the two survivors
    set_recorded(out, "b00000/classify", [" No", " Yes"])
    drop_recorded(out, "b00000/instances")      # its prompts depend on the classification
    run_self_instruct(cfg)                      # 3: instance prompts for an ordinary and a classification task
    set_recorded(out, "b00000/instances", [
        "Output: Sunlight scatters off air molecules, and blue light scatters the most.",
        "Class label: Even\nInput: 42\nClass label: Odd\nInput: 7\nClass label: Even\nInput: 42\nClass label: Odd\nInput: 7:",
    ])
    calls_before = len(read_jsonl(out / "generations.jsonl"))
    manifest = run_self_instruct(cfg).manifest  # 4: pure replay
    assert len(read_jsonl(out / "generations.jsonl")) == calls_before

    assert read_jsonl(out / "tasks.alpaca.jsonl") == [
        {"instruction": SKY, "input": "", "output": "Sunlight scatters off air molecules, and blue light scatters the most."},
        {"instruction": EVEN, "input": "42", "output": "Even"},
        {"instruction": EVEN, "input": "7", "output": "Odd"},
    ]
    pool = read_jsonl(out / "pool.jsonl")
    assert [(p["instruction"], p["is_classification"], p["status"]) for p in pool] == [
        (SKY, False, "accepted"), (EVEN, True, "accepted")]

    rejects = read_jsonl(out / "rejects.jsonl")
    by_candidate = {r["candidate_id"]: r for r in rejects if r["stage"] == "instruction"}
    assert {cid: r["filter"] for cid, r in by_candidate.items()} == {
        "b00000p00c01": "keywords", "b00000p00c02": "length", "b00000p00c03": "start",
        "b00000p00c04": "novelty", "b00000p00c06": "novelty"}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    seed_copy, near_copy = by_candidate["b00000p00c04"], by_candidate["b00000p00c06"]
    assert (seed_copy["most_similar"], seed_copy["score"]) == (SEED_CLF, 1.0)
    assert near_copy["most_similar"] == SKY
    assert near_copy["score"] == scorer.score(near_copy["instruction"], SKY)["rougeL"].fmeasure
    instance_rejects = [(r["input"], r["output"], r["filter"]) for r in rejects if r["stage"] == "instance"]
    assert instance_rejects == [("42", "Even", "duplicate_instance"), ("7:", "Odd", "incomplete_field")]

    acc = manifest["accounting"]
    assert (acc["candidates"], acc["accepted"], acc["rejected"], acc["alpaca_rows"]) == (7, 2, 5, 3)
    assert {k: (v["checked"], v["rejected"]) for k, v in acc["per_filter"].items()} == {
        "truncated": (7, 0), "length": (7, 1), "keywords": (6, 1), "start": (5, 1), "novelty": (4, 2),
        "instances": (2, 0), "target_reached": (2, 0)}
    assert manifest["kind"] == "self-instruct" and manifest["status"] == "complete"
    assert manifest["sampling"]["instructions"]["presence_penalty"] == 2.0
    entries = read_jsonl(out / "generations.jsonl")
    gens = [g for e in entries for row in e["generations"] for g in row]
    assert manifest["generation"]["completion_tokens"] == sum(g["completion_tokens"] for g in gens)
    assert manifest["generation"]["calls"] == 3


def test_target_count_stops_acceptance_and_records_the_rest(tmp_path):
    out = tmp_path / "run"
    cfg = small_config(out, num_tasks=1, method="alpaca")
    run_self_instruct(cfg)
    completion = (" Name a river in Europe and one city on it.\n4. Input:\n<noinput>\n4. Output:\nThe Danube; Vienna.\n###\n"
                  "5. Instruction: Give a synonym for the word below.\n5. Input:\nquick\n5. Output:\nfast\n###\n"
                  "6. Instruction: Broken block without its fields\n###\n")
    set_recorded(out, "b00000/instructions", [completion])
    manifest = run_self_instruct(cfg).manifest
    assert read_jsonl(out / "tasks.alpaca.jsonl") == [
        {"instruction": "Name a river in Europe and one city on it.", "input": "", "output": "The Danube; Vienna."}]
    rejects = read_jsonl(out / "rejects.jsonl")
    assert [(r["candidate_id"], r["filter"]) for r in rejects] == [
        ("b00000p00c01", "target_reached"), ("b00000p00c02", "format")]
    parsed = parse_alpaca_tasks(completion, 4)
    assert manifest["accounting"]["candidates"] == len(parsed) == 3
    assert manifest["accounting"]["accepted"] == 1 and manifest["status"] == "complete"


def test_tiny_model_run_accounts_for_every_candidate(tmp_path):
    out = tmp_path / "run"
    cfg = small_config(out, batch_size=2, max_prompts=4, num_tasks=50,
                       **{"self_instruct.sampling.max_tokens": 40})
    manifest = run_self_instruct(cfg).manifest
    assert manifest["status"] == "budget_exhausted" and manifest["num_prompts"] == 4
    entries = {e["key"]: e for e in read_jsonl(out / "generations.jsonl")}
    completions = [row[0] for key in ("b00000/instructions", "b00001/instructions") for row in entries[key]["generations"]]
    expected_ids = {f"b{b:05d}p{p:02d}c{k:02d}"
                    for (b, p), gen in zip([(0, 0), (0, 1), (1, 0), (1, 1)], completions, strict=True)
                    for k in range(len(parse_numbered_instructions(gen["text"])))}
    pool, rejects = read_jsonl(out / "pool.jsonl"), read_jsonl(out / "rejects.jsonl")
    accepted_ids = [p["id"] for p in pool if p["status"] == "accepted"]
    rejected_ids = [r["candidate_id"] for r in rejects if r["stage"] in ("instruction", "task")]
    assert sorted(accepted_ids + rejected_ids) == sorted(expected_ids)
    assert len(set(accepted_ids + rejected_ids)) == len(accepted_ids) + len(rejected_ids)
    acc = manifest["accounting"]
    assert acc["candidates"] == len(expected_ids) == acc["accepted"] + acc["rejected"]
    truncated = sum(len(parse_numbered_instructions(g["text"])) for g in completions if g["finish_reason"] == "length")
    assert acc["per_filter"].get("truncated", {}).get("rejected", 0) == truncated
    unparseable = sum(1 for g in completions if not parse_numbered_instructions(g["text"]))
    assert acc["unparseable_completions"] == unparseable
    gen = manifest["generation"]
    assert gen["completion_tokens"] == sum(g["completion_tokens"] for e in entries.values()
                                           for row in e["generations"] for g in row)
    assert gen["tokens_per_s"] == pytest.approx(gen["completion_tokens"] / gen["generation_seconds"], rel=1e-2)


def test_endpoint_failure_keeps_progress_and_the_run_continues_later(tmp_path):
    out = tmp_path / "run"
    first = small_config(out, batch_size=1, max_prompts=1, num_tasks=50)
    run_self_instruct(first)
    journal_before = (out / "generations.jsonl").read_text()
    rejects_before = (out / "rejects.jsonl").read_text()
    unreachable = small_config(out, max_prompts=2, num_tasks=50, backend={
        "name": "openai", "base_url": "http://127.0.0.1:9/v1", "max_retries": 1, "backoff_s": 0.01})
    with pytest.raises(GenerationError, match="cannot connect"):
        run_self_instruct(unreachable)
    assert (out / "generations.jsonl").read_text() == journal_before
    assert (out / "rejects.jsonl").read_text() == rejects_before
    manifest = run_self_instruct(small_config(out, max_prompts=2, num_tasks=50)).manifest
    assert manifest["num_prompts"] == 2
    assert (out / "generations.jsonl").read_text().startswith(journal_before)


def test_other_settings_refuse_the_folder_and_overwrite_starts_over(tmp_path):
    out = tmp_path / "run"
    run_self_instruct(small_config(out))
    with pytest.raises(StateError, match=r"other settings \(seed\)"):
        run_self_instruct(small_config(out, seed=7))
    (out / ".rejects.jsonl.x1y2.tmp").mkdir()  # an atomic write that a kill cut short
    manifest = run_self_instruct(small_config(out, seed=7), overwrite=True).manifest
    assert not (out / ".rejects.jsonl.x1y2.tmp").exists()
    assert manifest["seed"] == 7
    assert json.loads((out / ".selfinstruct.json").read_text())["settings"]["seed"] == 7


def test_a_folder_holding_something_else_is_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StateError, match="not empty"):
        run_self_instruct(small_config(tmp_path, seeds=str(FIXTURES / "seed_tasks.jsonl")))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_build_collects_the_output_folder_as_alpaca(tmp_path):
    from dataforge.config.build import InputSpec, OnError
    from dataforge.data.collect import collect

    out = tmp_path / "run"
    cfg = small_config(out, num_tasks=1, method="alpaca")
    run_self_instruct(cfg)
    set_recorded(out, "b00000/instructions", [
        " Name a river in Europe and one city on it.\n4. Input:\n<noinput>\n4. Output:\nThe Danube; Vienna.\n###"])
    run_self_instruct(cfg)
    kept = collect([InputSpec(path=str(out), source="synthetic")], OnError.fail).kept
    assert kept.select("instruction", "input", "output").to_dicts() == read_jsonl(out / "tasks.alpaca.jsonl")
    assert kept.height == 1


@pytest.mark.parametrize("name", ["self_instruct.yaml", "self_instruct_alpaca.yaml"])
def test_shipped_pipelines_validate(name):
    from dataforge.cli.self_instruct import self_instruct_config_from_cli
    from dataforge.paths import pipelines_dir

    cfg = self_instruct_config_from_cli(pipelines_dir() / name, {})
    assert cfg.seeds.endswith("seed_tasks.jsonl")
    assert len(load_seed_tasks(cfg.seeds)) >= cfg.self_instruct.num_seed_tasks


def test_auto_prompt_style_uses_the_chat_template_of_a_chat_model(tmp_path):
    manifest = run_self_instruct(small_config(tmp_path / "run", prompt_style="auto")).manifest
    assert manifest["prompt_style"] == "chat"


def test_a_tune_is_another_model_so_its_adapter_refuses_a_base_models_folder(tmp_path):
    from peft import LoraConfig, get_peft_model

    from dataforge.models import load_causal_lm

    adapter = tmp_path / "adapter"
    get_peft_model(load_causal_lm("tiny"), LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(str(adapter))
    out = tmp_path / "run"
    run_self_instruct(small_config(out))
    with pytest.raises(StateError, match=r"other settings \(adapter\)"):
        run_self_instruct(small_config(out, backend={"name": "transformers", "device": "cpu", "adapter": str(adapter)}))
