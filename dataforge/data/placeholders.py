"""Template placeholders left in data (`{{name}}`, `{{author}}`), counted and, on request, filled.

Why: identity-style sets (a model introducing itself) ship with `{{name}}` in their answers for the
user to fill in. Trained as they are, the model learns to call itself "{{name}}". Filling is a
rewrite the user asks for (`clean.fill`, `--fill name=Forge`), so it is its own step, never part of
a keep/drop check. A placeholder without a value is left exactly as it is and counted, so the
summary can warn about it.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

PLACEHOLDER = r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}"
TEXT_FIELDS = ("system", "instruction", "input", "output")


def fill_placeholders(records: pl.DataFrame, fill: Mapping[str, str]) -> pl.DataFrame:
    """Every `{{key}}` (spaces inside the braces allowed) replaced by `fill[key]`, in the text fields
    and every history turn; other placeholders and all other text unchanged."""
    if not fill:
        return records

    def rewrite(text: pl.Expr) -> pl.Expr:
        for key, value in fill.items():
            text = text.str.replace_all(rf"\{{\{{\s*{key}\s*\}}\}}", value.replace("$", "$$"))
        return text

    content = pl.element().struct.with_fields(rewrite(pl.field("content")))
    return records.with_columns(*(rewrite(pl.col(f)) for f in TEXT_FIELDS),
                                pl.col("history").list.eval(content))


def placeholder_counts(records: pl.DataFrame) -> dict[str, dict[str, int]]:
    """source -> `{{name}}` -> how many records hold it (in any text field or history turn)."""
    turns = pl.col("history").list.eval(pl.element().struct.field("content")).list.join("\n").fill_null("")
    text = pl.concat_str([*(pl.col(f).fill_null("") for f in TEXT_FIELDS), turns], separator="\n")
    found = (records.select("source", text.alias("t")).with_row_index("row")
             .filter(pl.col("t").str.contains("{{", literal=True))
             .select("row", "source", pl.col("t").str.extract_all(PLACEHOLDER).alias("p"))
             .explode("p").drop_nulls("p")
             .select("row", "source", pl.format("{{{{{}}}}}", pl.col("p").str.extract(PLACEHOLDER)).alias("name"))
             .unique(["row", "name"]).group_by("source", "name").len().sort("source", "name"))
    out: dict[str, dict[str, int]] = {}
    for source, name, n in found.iter_rows():
        out.setdefault(source, {})[name] = n
    return out
