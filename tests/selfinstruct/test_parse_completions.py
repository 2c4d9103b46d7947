from dataforge.selfinstruct.parse import (
    Instance,
    parse_alpaca_tasks,
    parse_input_first,
    parse_is_classification,
    parse_numbered_instructions,
    parse_output_first,
)


def test_numbered_list_continues_from_the_open_item():
    text = " Write a haiku about rain.\n10. Name three rivers in Africa.\n11. Explain photosynthesis to a child."
    assert parse_numbered_instructions(text) == [
        "Write a haiku about rain.", "Name three rivers in Africa.", "Explain photosynthesis to a child."]


def test_malformed_numbering_still_splits_items():
    text = (" First task here\n10) Second task uses a parenthesis\n  11 .  Third has stray spaces\n"
            "12.\nFourth starts on the next line\n13.   \n14. Fifth\ncontinues on a second line")
    assert parse_numbered_instructions(text) == [
        "First task here", "Second task uses a parenthesis", "Third has stray spaces",
        "Fourth starts on the next line", "Fifth continues on a second line"]


def test_numbers_inside_an_item_do_not_split_it():
    text = " Convert 10.5 miles to km.\n10. Add 3.14 and 2.\n11.5 is not a marker"
    assert parse_numbered_instructions(text) == ["Convert 10.5 miles to km.", "Add 3.14 and 2. 11.5 is not a marker"]


def test_chat_reply_that_restarts_numbering_is_split_the_same_way():
    assert parse_numbered_instructions("9. Plan a picnic menu.\n10. Rate the joke.") == [
        "Plan a picnic menu.", "Rate the joke."]


def test_empty_or_blank_completion_has_no_items():
    assert parse_numbered_instructions("") == []
    assert parse_numbered_instructions("  \n\n 10. \n") == []


def test_alpaca_blocks_parse_and_noinput_becomes_empty():
    text = (" Give a synonym for the word.\n4. Input:\nhappy\n4. Output:\njoyful\n###\n"
            "5. Instruction: Name a prime number above 10.\n5. Input:\n<noinput>\n5. Output:\n11\n###\n")
    tasks = parse_alpaca_tasks(text, first_number=4)
    assert [(t.instruction, t.input, t.output, t.malformed) for t in tasks] == [
        ("Give a synonym for the word.", "happy", "joyful", None),
        ("Name a prime number above 10.", "", "11", None)]


def test_alpaca_block_missing_a_field_is_marked_malformed_not_dropped():
    text = " Only an instruction here.\n###\n5. Instruction: Fine one.\n5. Input:\n<noinput>\n5. Output:\nok"
    tasks = parse_alpaca_tasks(text, first_number=4)
    assert len(tasks) == 2
    assert tasks[0].malformed is not None and "instruction" in tasks[0].malformed
    assert tasks[0].instruction.startswith("4. Instruction: Only an instruction here.")
    assert tasks[1].malformed is None and tasks[1].output == "ok"


def test_classification_answer():
    assert parse_is_classification(" Yes")
    assert parse_is_classification("yes, it is")
    assert not parse_is_classification(" No")
    assert not parse_is_classification("maybe yes")


def test_input_first_examples_and_bare_output():
    text = "Example 1\nInput: 2 + 2\nOutput: 4\nExample 2\nInput: 3 + 5\nOutput: 8\n"
    assert parse_input_first(text) == [Instance("2 + 2", "4"), Instance("3 + 5", "8")]
    assert parse_input_first("Output:\nDrink water and sleep well.") == [Instance("", "Drink water and sleep well.")]
    assert parse_input_first("just some words") == []


def test_input_first_keeps_only_the_first_pair_of_a_block():
    text = "Input: a\nOutput: b\nInput: c\nOutput: d"
    assert parse_input_first(text) == [Instance("a", "b")]


def test_output_first_label_then_input():
    text = "Class label: Positive\nInput: Loved it.\nClass label: Negative\nInput: Hated it.\nClass label: Neutral"
    assert parse_output_first(text) == [
        Instance("Loved it.", "Positive"), Instance("Hated it.", "Negative"), Instance("", "Neutral")]
