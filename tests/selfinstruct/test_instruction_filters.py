import pytest

from dataforge.selfinstruct.config import FiltersConfig
from dataforge.selfinstruct.filters import InstructionFilters, invalid_instance, judge_instances
from dataforge.selfinstruct.parse import Instance


@pytest.fixture(scope="module")
def filters():
    return InstructionFilters(FiltersConfig())


@pytest.mark.parametrize("text, dropped", [
    ("Describe the images in the article.", "images"),
    ("Summarize this FILE for me please.", "FILE"),
    ("Please go to the store and buy milk.", "go to"),
    ("Plot the sales figures over time.", "Plot"),
    ("Suggest music for a rainy afternoon.", "music"),
    ("Draw a flowchart of the login process.", "Draw"),
])
def test_blacklisted_words_match_whole_words_ignoring_case(filters, text, dropped):
    reason = filters.keywords(text)
    assert reason is not None and f"'{dropped}'" in reason


@pytest.mark.parametrize("text", [
    "Imagine a city without cars and describe it.",   # imagine is not image
    "Explain how mapping works in functional code.",  # mapping is not map
    "Tell me where to go tomorrow in Paris.",         # "go tomorrow" is not "go to"
    "Profile the customer from the notes below.",     # file inside a word
])
def test_words_containing_a_keyword_are_kept(filters, text):
    assert filters.keywords(text) is None


def test_write_a_program_prefix_is_banned_but_not_elsewhere(filters):
    assert "prefix" in filters.keywords("Write a program that sorts numbers.")
    assert "prefix" in filters.keywords("write a program to add two numbers.")
    assert filters.keywords("Explain why you would write a program in Python.") is None


def test_keywords_are_configurable():
    custom = InstructionFilters(FiltersConfig(keywords=["recipe"], banned_prefixes=[]))
    assert custom.keywords("Give me a recipe for soup.") is not None
    assert custom.keywords("Describe the images in the article.") is None
    assert custom.keywords("Write a program that sorts numbers.") is None


@pytest.mark.parametrize("n_words, dropped", [(1, True), (3, True), (4, False), (150, False), (151, True)])
def test_length_drops_three_words_or_fewer_and_over_150(filters, n_words, dropped):
    text = " ".join(["word"] * n_words)
    assert (filters.length(text) is not None) == dropped


@pytest.mark.parametrize("text, dropped", [
    ("\"Quote the sentence back to me.", True),
    ("- List five fruits you like.", True),
    ("Élaborez un plan de voyage.", True),
    ("日本の首都はどこですか？", True),
    ("Name five fruits you like.", False),
    ("3 reasons to learn Python.", False),
])
def test_start_drops_punctuation_and_non_ascii(filters, text, dropped):
    assert (filters.start(text) is not None) == dropped


def test_invalid_instances():
    assert invalid_instance(Instance("x", "")) == "empty_output"
    assert invalid_instance(Instance("same", "same")) == "input_equals_output"
    assert invalid_instance(Instance("Sentence:", "yes")) == "incomplete_field"
    assert invalid_instance(Instance("a", "Answer:")) == "incomplete_field"
    assert invalid_instance(Instance("", "fine")) is None


def test_judge_instances_dedupes_drops_conflicts_and_caps():
    instances = [Instance("a", "1"), Instance("a", "1"), Instance("b", "2"), Instance("b", "3"),
                 Instance("", "free"), Instance("c", "4"), Instance("d", "5"), Instance("e", ""), Instance("f", "6")]
    verdicts = judge_instances(instances, max_instances=3)
    assert [v.reason for v in verdicts] == [None, "duplicate_instance", "conflicting_outputs", "conflicting_outputs",
                                            None, None, "over_max_instances", "empty_output", "over_max_instances"]
