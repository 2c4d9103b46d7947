"""Prompt formats of the Open LLM Leaderboard v1 tasks, as lm-evaluation-harness writes them.

Each function reads one record in the schema of the Hugging Face copy of its set (allenai/ai2_arc,
Rowan/hellaswag, cais/mmlu, truthfulqa/truthful_qa multiple_choice) and returns the question lm-eval
would build from it. The sources are lm-eval's task configs (lm_eval/tasks/arc/arc_easy.yaml,
hellaswag/hellaswag.yaml and utils.py, mmlu/default/_default_template_yaml and mmlu_<subject>.yaml,
truthfulqa/truthfulqa_mc1.yaml and mc2.yaml); the parity test holds every context string and every
score to lm-eval's own on the same files.
"""

from __future__ import annotations

import re

from dataforge.eval.multiple_choice import BadField, DocView, Viewer, fields_viewer
from dataforge.eval.tasks import ChoiceFormat, MultipleChoiceTask

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine",
    "college_physics", "computer_security", "conceptual_physics", "econometrics", "electrical_engineering",
    "elementary_mathematics", "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy",
    "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions",
)
MMLU_LETTERS = ("A", "B", "C", "D")

# truthfulqa_mc1.yaml's fixed QA primer (the `prompt_qa` of its doc_to_text).
TRUTHFULQA_PRIMER = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)


def arc_view(doc: dict) -> DocView:
    """arc_easy.yaml: "Question: {{question}}\\nAnswer:", choices.text, gold = label index of answerKey."""
    labels = list(doc["choices"]["label"])
    if doc["answerKey"] not in labels:
        raise BadField("answerKey", f"{doc['answerKey']!r} is not one of the choice labels {labels}")
    return DocView(query=f"Question: {doc['question']}\nAnswer:", choices=tuple(doc["choices"]["text"]),
                   gold=labels.index(doc["answerKey"]))


def hellaswag_preprocess(text: str) -> str:
    """hellaswag/utils.py `preprocess`: drops the WikiHow bracket artifacts."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_view(doc: dict) -> DocView:
    """hellaswag/utils.py `process_docs`: query from activity label and context, endings preprocessed."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return DocView(query=hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
                   choices=tuple(hellaswag_preprocess(e) for e in doc["endings"]), gold=int(doc["label"]))


def mmlu_description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def mmlu_view(doc: dict) -> DocView:
    """mmlu/default: the question, lettered choices, "Answer:"; the choices scored are the letters."""
    choices = list(doc["choices"])
    if len(choices) != 4:
        raise BadField("choices", f"MMLU questions have 4 choices, this one has {len(choices)}")
    subject = doc["subject"]
    if subject not in MMLU_SUBJECTS:
        raise BadField("subject", f"unknown MMLU subject {subject!r}")
    answer = doc["answer"]
    gold = MMLU_LETTERS.index(answer) if answer in MMLU_LETTERS else int(answer)
    lines = [doc["question"].strip()] + [f"{letter}. {c}" for letter, c in zip(MMLU_LETTERS, choices, strict=True)]
    return DocView(query="\n".join(lines) + "\nAnswer:", choices=MMLU_LETTERS, gold=gold,
                   description=mmlu_description(subject), info={"subject": subject})


def truthfulqa_query(doc: dict) -> str:
    return TRUTHFULQA_PRIMER + "\n\nQ: " + doc["question"] + "\nA:"


def truthfulqa_mc1_view(doc: dict) -> DocView:
    """truthfulqa_mc1.yaml: the single true answer is always the first of mc1_targets."""
    return DocView(query=truthfulqa_query(doc), choices=tuple(doc["mc1_targets"]["choices"]), gold=0)


def truthfulqa_mc2_view(doc: dict) -> DocView:
    """truthfulqa_mc2.yaml: mc2 = total probability of the true answers over all of mc2_targets."""
    targets = doc["mc2_targets"]
    if len(targets["labels"]) != len(targets["choices"]):
        raise BadField("mc2_targets", "labels and choices differ in length")
    true = tuple(i for i, label in enumerate(targets["labels"]) if int(label) == 1)
    if not true:
        raise BadField("mc2_targets", "no true answer (no label 1)")
    return DocView(query=truthfulqa_query(doc), choices=tuple(targets["choices"]), gold=true[0], true_choices=true)


VIEWERS: dict[ChoiceFormat, Viewer] = {
    ChoiceFormat.arc: arc_view,
    ChoiceFormat.hellaswag: hellaswag_view,
    ChoiceFormat.mmlu: mmlu_view,
    ChoiceFormat.truthfulqa_mc1: truthfulqa_mc1_view,
    ChoiceFormat.truthfulqa_mc2: truthfulqa_mc2_view,
}

# The field a bad gold answer is reported against, per format.
GOLD_FIELDS: dict[ChoiceFormat, str] = {
    ChoiceFormat.arc: "answerKey", ChoiceFormat.hellaswag: "label", ChoiceFormat.mmlu: "answer",
    ChoiceFormat.truthfulqa_mc1: "mc1_targets", ChoiceFormat.truthfulqa_mc2: "mc2_targets",
}


def viewer_for(task: MultipleChoiceTask) -> tuple[Viewer, str]:
    """The record reader of a task's format, and the field its gold answer lives in."""
    if task.format is ChoiceFormat.fields:
        return fields_viewer(task), task.gold or "gold"
    return VIEWERS[task.format], GOLD_FIELDS[task.format]
