import random
import re

from dataforge.selfinstruct.prompts import (
    alpaca_prompt,
    as_chat,
    classification_prompt,
    instance_prompt,
    prompt_data,
    self_instruct_prompt,
)
from dataforge.selfinstruct.run import mix_instructions


def test_self_instruct_prompt_lists_eight_and_opens_nine():
    instructions = [f"Task number {i}:" for i in range(8)]
    instructions[3] = "A task\nspread over   lines"
    prompt = self_instruct_prompt(instructions)
    lines = prompt.split("\n")
    assert lines[0] == "Come up with a series of tasks:"
    assert lines[1:9] == [f"{i + 1}. " + ("A task spread over lines" if i == 3 else f"Task number {i}")
                          for i in range(8)]
    assert lines[9] == "9." and len(lines) == 10


def test_alpaca_prompt_shows_three_seed_tasks_and_asks_for_twenty():
    tasks = [("Name a color.", "", "Blue"), ("Translate to French.", "cat", "chat"), ("Add the numbers.", "2, 3", "5")]
    prompt = alpaca_prompt(tasks, num_new_tasks=20)
    assert "set of 20 diverse task instructions" in prompt and "List of 20 tasks:" in prompt
    assert prompt.endswith("###\n4. Instruction:")
    assert "1. Instruction: Name a color.\n1. Input:\n<noinput>\n1. Output:\nBlue" in prompt
    assert "2. Instruction: Translate to French.\n2. Input:\ncat\n2. Output:\nchat" in prompt
    assert prompt.count("###") == 4


def test_classification_prompt_is_few_shot_yes_no():
    prompt = classification_prompt("Is the review positive?", num_examples=4)
    assert prompt.startswith(prompt_data()["classify"]["header"])
    assert prompt.count("Is it classification?") == 5
    assert prompt.endswith("Task: Is the review positive?\nIs it classification?")
    assert len(re.findall(r"Is it classification\? (Yes|No)", prompt)) == 4


def test_instance_prompt_is_output_first_only_for_classification():
    clf = instance_prompt("Decide if the email is spam.", True, num_examples=3)
    gen = instance_prompt("Write a limerick about cats.", False, num_examples=3)
    assert "Class label:" in clf and "Class label:" not in gen
    assert "Example 1" in gen and "Output:" in gen
    assert clf.endswith("Task: Decide if the email is spam.\n")
    assert gen.endswith("Task: Write a limerick about cats.\n")
    assert clf.count("Task:") == gen.count("Task:") == 4


def test_chat_wraps_the_prompt_as_one_user_message():
    assert as_chat("hello") == [{"role": "user", "content": "hello"}]


def test_mix_takes_two_machine_and_six_human_when_the_pool_allows():
    human = [f"h{i}" for i in range(20)]
    machine = [f"m{i}" for i in range(5)]
    chosen = mix_instructions(random.Random(0), human, machine, 6, 2)
    assert len(chosen) == 8 and len(set(chosen)) == 8
    assert sum(c.startswith("m") for c in chosen) == 2
    assert chosen == mix_instructions(random.Random(0), human, machine, 6, 2)


def test_mix_fills_with_human_seeds_while_the_pool_is_small():
    human = [f"h{i}" for i in range(20)]
    chosen = mix_instructions(random.Random(1), human, ["m0"], 6, 2)
    assert sorted(c[0] for c in chosen) == ["h"] * 7 + ["m"]
    assert len(mix_instructions(random.Random(1), human[:5], [], 6, 2)) == 5
