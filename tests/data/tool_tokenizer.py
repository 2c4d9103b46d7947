"""A tokenizer folder for tool-calling tests: the tiny tokenizer with a chat template of our own that
renders tool schemas and tool results (the tiny model's own template has no tool support)."""

from __future__ import annotations

import shutil
from pathlib import Path

from dataforge.paths import TINY_MODEL_DIR

TOOL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if tools %}## Tools\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}\n{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'system' %}## System\n{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}## User\n{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'assistant' %}## Assistant\n{{ m['content'] }}{{ eos_token }}\n\n"
    "{% elif m['role'] == 'tool' %}## Tool result\n{{ m['content'] }}\n\n"
    "{% else %}{{ raise_exception('unknown role ' + m['role']) }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}## Assistant\n{% endif %}"
)


def tool_tokenizer_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_MODEL_DIR / name, folder / name)
    (folder / "chat_template.jinja").write_text(TOOL_CHAT_TEMPLATE, encoding="utf-8")
    return folder
