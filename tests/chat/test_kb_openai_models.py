"""Knowledge bases as OpenAI models: the ``openai`` client asks the gateway for ``kb:<name>``.

Real processes: a FastChat controller, a proxy worker serving the scripted model, the gateway and
the API server, all under one API key. The gateway sends kb: models to the API server's
knowledge-base chat, which asks the model through the gateway again, as in a real stack.
"""

from __future__ import annotations

import contextlib
import json

import openai
import pytest

from tests.chat.conftest import KB_FILES, SCRIPTED_MODEL, ZEPHYR_QUESTION, create_kb_with_files, echo_of
from tests.chat.servers.openai_scripted import scripted_openai
from tests.helpers.api_server import start_api_server
from tests.helpers.processes import child_env, free_port, running_process
from tests.helpers.stack import wait_listed

KEY = "kb-models-key"
KB = "openai_kb"
ALIAS = "zephyr-helper"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("kb_models")
    controller_port, worker_port, gateway_port = free_port(), free_port(), free_port()
    controller = f"http://127.0.0.1:{controller_port}"
    gateway = f"http://127.0.0.1:{gateway_port}"
    common = {
        "CHATCHAT_API_KEYS": json.dumps([KEY]),
        "CHATCHAT_FSCHAT_CONTROLLER__PORT": str(controller_port),
        "CHATCHAT_FSCHAT_OPENAI_API__PORT": str(gateway_port),
        "CHATCHAT_LLM_MODELS": json.dumps([SCRIPTED_MODEL]),
        "CHATCHAT_KB_MODEL_ALIASES": json.dumps({ALIAS: KB}),
    }
    with contextlib.ExitStack() as stack:
        llm = stack.enter_context(scripted_openai([SCRIPTED_MODEL]))
        online = {SCRIPTED_MODEL: {"api_base_url": llm.url + "/v1", "model_name": SCRIPTED_MODEL}}
        worker_env = child_env(root, **common, CHATCHAT_ONLINE_LLM_MODEL=json.dumps(online))
        stack.enter_context(
            running_process(
                ["-m", "server.controller", "--port", str(controller_port)],
                env=child_env(root, **common),
                log_path=root / "controller.log",
                health_url=controller + "/health",
            )
        )
        worker_args = ["-m", "server.model_workers.proxy_worker", "--model-name", SCRIPTED_MODEL]
        worker_args += ["--port", str(worker_port), "--controller-address", controller]
        stack.enter_context(
            running_process(
                worker_args,
                env=worker_env,
                log_path=root / "worker.log",
                health_url=f"http://127.0.0.1:{worker_port}/health",
            )
        )
        wait_listed(controller, SCRIPTED_MODEL, timeout=90)
        api = stack.enter_context(start_api_server(root / "api", **common))
        stack.enter_context(
            running_process(
                ["-m", "server.openai_gateway", "--port", str(gateway_port), "--api-address", api.url],
                env=child_env(root, **common),
                log_path=root / "gateway.log",
                health_url=gateway + "/health",
            )
        )
        create_kb_with_files(api, KB, KB_FILES, headers={"Authorization": f"Bearer {KEY}"})
        yield {"llm": llm, "api": api, "gateway": gateway}


@pytest.fixture
def client(stack) -> openai.OpenAI:
    stack["llm"].reset()
    return openai.OpenAI(base_url=stack["gateway"] + "/v1", api_key=KEY, timeout=120, max_retries=0)


def test_models_lists_knowledge_bases_beside_the_gateways_own_models(client):
    models = {m.id: m for m in client.models.list().data}
    assert SCRIPTED_MODEL in models
    assert f"kb:{KB}" in models and ALIAS in models
    assert models[f"kb:{KB}"].owned_by == "chatkb-knowledge-base"


def test_non_streamed_answer_comes_from_the_knowledge_base_with_numbered_sources(client, stack):
    reply = client.chat.completions.create(
        model=f"kb:{KB}", messages=[{"role": "user", "content": ZEPHYR_QUESTION}], extra_body={"top_k": 2}
    )

    text = reply.choices[0].message.content
    sources = reply.model_extra["sources"]
    assert [s["index"] for s in sources] == [1, 2]
    assert sources[0]["title"] == "zephyr_project.md" and "7391" in sources[0]["text"]
    assert "/knowledge_base/download_doc?" in sources[0]["link"]
    # The model saw the retrieved chunk (the scripted model echoes its prompt), then the citations follow.
    prompt = stack["llm"].chat_requests()[-1]["messages"][-1]["content"]
    assert "launch code is 7391" in prompt and ZEPHYR_QUESTION in prompt
    answer, _, citations = text.partition("\n\n---\n")
    assert answer == echo_of(prompt)
    assert citations.splitlines()[0] == f"[1] [zephyr_project.md]({sources[0]['link']})"
    assert len(citations.splitlines()) == 2
    assert reply.choices[0].finish_reason == "stop" and reply.model == f"kb:{KB}"


def test_streamed_answer_arrives_in_chunks_and_ends_with_sources(client, stack):
    stream = client.chat.completions.create(
        model=ALIAS,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "I grow vegetables."},
            {"role": "assistant", "content": "Nice."},
            {"role": "user", "content": "How much sunlight do tomatoes need?"},
        ],
        stream=True,
        temperature=0.1,
    )
    chunks = list(stream)

    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) > 3
    text = "".join(pieces)
    assert chunks[-1].choices[0].finish_reason == "stop"
    sources = chunks[-1].model_extra["sources"]
    assert sources[0]["title"] == "tomato_garden.txt"
    assert f"[1] [tomato_garden.txt]({sources[0]['link']})" in text
    request = stack["llm"].chat_requests()[-1]
    assert [m["content"] for m in request["messages"][:3]] == ["Be brief.", "I grow vegetables.", "Nice."]
    assert "six to eight hours" in request["messages"][-1]["content"]
    assert request["temperature"] == pytest.approx(0.1)
    assert text.startswith("Echo: ")


def test_the_gateways_own_models_still_answer(client, stack):
    reply = client.chat.completions.create(model=SCRIPTED_MODEL, messages=[{"role": "user", "content": "plain hi"}])
    assert reply.choices[0].message.content == "Echo: plain hi"
    assert "sources" not in (reply.model_extra or {})
    stream = client.chat.completions.create(
        model=SCRIPTED_MODEL, messages=[{"role": "user", "content": "streamed hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: streamed hi"


def test_unknown_knowledge_base_and_missing_key_are_clear_errors(client, stack):
    with pytest.raises(openai.NotFoundError, match="no_such_kb"):
        client.chat.completions.create(model="kb:no_such_kb", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError, match="no_such_kb"):
        client.chat.completions.create(model="kb:no_such_kb", messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=f"kb:{KB}", messages=[{"role": "assistant", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="kb:../etc", messages=[{"role": "user", "content": "x"}])
    anonymous = openai.OpenAI(base_url=stack["gateway"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.chat.completions.create(model=f"kb:{KB}", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    assert stack["llm"].chat_requests() == []
