"""The generic proxy worker: an OpenAI-compatible upstream served under our own model name."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.helpers.processes import child_env, free_port, running_process
from tests.helpers.stack import wait_listed

pytestmark = pytest.mark.slow


def test_a_proxy_worker_forwards_to_an_openai_compatible_upstream(llm_stack, tmp_path):
    # The upstream is the stack's own gateway: any OpenAI-compatible server would do.
    online = {"proxy-smol": {"api_base_url": llm_stack.openai_base_url, "model_name": llm_stack.model_name}}
    workers = {
        **json.loads(llm_stack.env["CHATCHAT_FSCHAT_MODEL_WORKERS"]),
        "proxy-smol": {"limit_worker_concurrency": 3},
    }
    stack_env = {**llm_stack.env, "CHATCHAT_FSCHAT_MODEL_WORKERS": json.dumps(workers)}
    env = child_env(tmp_path, **stack_env, CHATCHAT_ONLINE_LLM_MODEL=json.dumps(online))
    port = free_port()
    args = ["-m", "server.model_workers.proxy_worker", "--model-name", "proxy-smol", "--port", str(port)]
    args += ["--controller-address", llm_stack.controller_url]
    with running_process(args, env=env, log_path=tmp_path / "proxy.log", health_url=f"http://127.0.0.1:{port}/health"):
        wait_listed(llm_stack.controller_url, "proxy-smol")
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["concurrency"] == 3  # from settings
        client = openai.OpenAI(base_url=llm_stack.openai_base_url, api_key="EMPTY", timeout=300, max_retries=0)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        direct = client.chat.completions.create(
            model=llm_stack.model_name, messages=messages, max_tokens=12, temperature=0
        )
        proxied = client.chat.completions.create(model="proxy-smol", messages=messages, max_tokens=12, temperature=0)
        assert proxied.choices[0].message.content == direct.choices[0].message.content
        stream = client.chat.completions.create(
            model="proxy-smol", messages=messages, max_tokens=12, temperature=0, stream=True
        )
        assert (
            "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == direct.choices[0].message.content
        )
        # a client's max_tokens reaches the upstream
        short = client.chat.completions.create(model="proxy-smol", messages=messages, max_tokens=2, temperature=0)
        # The upstream stopped for length; usage is re-counted from the text, so allow a token of slack.
        assert short.choices[0].finish_reason == "length"
        assert short.usage.completion_tokens <= 3
    # on SIGTERM it unregisters at once, not after the heart-beat expiry
    assert "proxy-smol" not in httpx.post(llm_stack.controller_url + "/list_models", timeout=5).json()["models"]


def test_an_unknown_online_model_fails_fast_with_a_clear_message(tmp_path):
    import subprocess
    import sys

    from tests.helpers.processes import REPO_ROOT

    result = subprocess.run(
        [sys.executable, "-m", "server.model_workers.proxy_worker", "--model-name", "nope", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "'nope' is not in ONLINE_LLM_MODEL" in result.stdout + result.stderr
