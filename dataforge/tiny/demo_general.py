"""The demo's general data: questions about the standard library answered with pretraining text.

Each answer is the first paragraph of a docstring from the corpus TRAIN part (never the held-out
part, which the evals score), so these records sit on the distribution the tiny model was
pretrained on. Mixing them into a domain tune keeps pulling the weights back towards that text,
which is what protects the general held-out perplexity.
"""

from __future__ import annotations

from random import Random

from dataforge.tiny.corpus import Document

SYSTEM_PROMPT = "You are a concise assistant that explains the Python standard library."
MIN_ANSWER_CHARS = 60
MAX_ANSWER_CHARS = 700


def first_paragraph(text: str) -> str:
    return text.split("\n\n", 1)[0].strip()


def question_for(doc: Document, r: Random) -> str:
    short = doc.name.rsplit(".", 1)[-1]
    module = doc.name.split(".", 1)[0]
    if doc.kind == "module":
        choices = (f"Summarize what the `{doc.name}` module is for.",
                   f"What does the Python module `{doc.name}` provide?",
                   f"Give a short description of `{doc.name}`.")
    elif doc.kind == "class":
        choices = (f"What is the `{doc.name}` class for?",
                   f"Describe the class `{short}` from `{module}`.",
                   f"Explain what a `{doc.name}` object represents.")
    else:
        choices = (f"Explain what `{doc.name}` does.",
                   f"What does `{short}` in `{doc.name.rsplit('.', 1)[0]}` do?",
                   f"Briefly, what is the purpose of `{doc.name}`?")
    return r.choice(choices)


def usable_documents(train_docs: list[Document]) -> list[Document]:
    """Train documents whose first paragraph makes a self-contained answer of reasonable length.

    Private names (`_bootstrap`, `__init__`) are left out: nobody asks what an implementation
    detail is for.
    """
    out = []
    for d in train_docs:
        if any(part.startswith("_") for part in d.name.split(".")):
            continue
        para = first_paragraph(d.text)
        if MIN_ANSWER_CHARS <= len(para) <= MAX_ANSWER_CHARS and not para.rstrip().endswith(":"):
            out.append(d)
    return out


def general_record(docs: list[Document], r: Random) -> dict:
    """A ShareGPT record: one or two question/answer turns, sometimes with a system prompt."""
    turns: list[dict] = []
    if r.random() < 0.2:
        turns.append({"from": "system", "value": SYSTEM_PROMPT})
    for doc in docs:
        turns.append({"from": "human", "value": question_for(doc, r)})
        turns.append({"from": "gpt", "value": first_paragraph(doc.text)})
    return {"conversations": turns}
