"""Any OpenAI-compatible endpoint (`vllm serve`, TGI, SGLang, hosted APIs) over plain HTTP.

Strings go to `/completions` (base models), message lists to `/chat/completions`. Requests run
concurrently on a small thread pool and come back in prompt order. Refused connections, timeouts,
429 and 5xx answers are retried with exponential backoff; anything else, or running out of retries,
is a `GenerationError` with the endpoint and the server's own message, never a traceback.
With `n > 1` each sample is its own request (seed + i), so every generation has exact token counts.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from pydantic import Field

from dataforge.config.base import StrictModel
from dataforge.generate.base import (
    BackendBase,
    Generation,
    GenerationError,
    Prompt,
    SamplingParams,
    is_chat_prompt,
)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIOptions(StrictModel):
    """`backend: {name: openai, ...}` in YAML."""

    name: Literal["openai"] = Field("openai", description="Any OpenAI-compatible endpoint (vllm serve, TGI, hosted APIs).")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="Endpoint base URL (ends in /v1).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds to wait for one answer.")
    max_retries: int = Field(5, ge=0, description="Retries (exponential backoff) on refused connections, timeouts, 429 and 5xx.")
    backoff_s: float = Field(1.0, ge=0, description="First backoff delay; doubles each retry, capped at 30 s.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")

    def kwargs(self, seed: int) -> dict:
        return self.model_dump(exclude={"name"})


class OpenAIBackend(BackendBase):
    name = "openai"
    Options = OpenAIOptions

    def __init__(self, model: str, *, base_url: str = "http://127.0.0.1:8000/v1", api_key: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", chat: bool = False, timeout_s: float = 120.0,
                 max_retries: int = 5, backoff_s: float = 1.0, concurrency: int = 8):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env, "")
        self.is_chat_model = chat
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max(0, max_retries), backoff_s
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="openai")

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        jobs = [(p, None if params.seed is None else params.seed + i) for p in prompts for i in range(params.n)]
        gens = list(self._pool.map(lambda job: self._one(job[0], params, job[1]), jobs))
        return [gens[k * params.n:(k + 1) * params.n] for k in range(len(prompts))]

    def _one(self, prompt: Prompt, params: SamplingParams, seed: int | None) -> Generation:
        body: dict = {
            "model": self.model, "max_tokens": params.max_tokens, "temperature": params.temperature,
            "top_p": params.top_p, "n": 1, "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if seed is not None:
            body["seed"] = seed
        chat = is_chat_prompt(prompt)
        if chat:
            body["messages"] = prompt
        else:
            body["prompt"] = prompt
        reply = self._post("/chat/completions" if chat else "/completions", body)
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
            usage = reply.get("usage") or {}
            return Generation(text=text or "", prompt_tokens=int(usage.get("prompt_tokens", 0)),
                              completion_tokens=int(usage.get("completion_tokens", 0)),
                              finish_reason="length" if choice.get("finish_reason") == "length" else "stop")
        except (KeyError, IndexError, TypeError) as exc:
            raise GenerationError(f"endpoint {self.base_url} sent an answer without {exc}: "
                                  f"{json.dumps(reply)[:300]}") from None

    def _post(self, path: str, body: dict) -> dict:
        url = self.base_url + path
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 30.0))
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:500]
                if exc.code not in RETRY_STATUS:
                    raise GenerationError(f"endpoint {url} answered HTTP {exc.code}: {detail}") from None
                last = f"HTTP {exc.code}: {detail}"
            except TimeoutError:
                last = f"no answer within {self.timeout_s:g} s"
            except urllib.error.URLError as exc:
                reason = exc.reason
                last = (f"no answer within {self.timeout_s:g} s" if isinstance(reason, TimeoutError)
                        else f"cannot connect ({reason})")
            except (ConnectionError, json.JSONDecodeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
        raise GenerationError(f"endpoint {url} failed after {self.max_retries + 1} attempts: {last}")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
