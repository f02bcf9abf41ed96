"""The OpenAI-compatible gateway with the default model, through real clients (real processes)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import openai
import pytest

from tests.helpers.processes import child_env, free_port, running_process
from tests.helpers.stack import streamed_text

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(llm_stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm_stack.openai_base_url, api_key="EMPTY", timeout=300, max_retries=0)


def test_models_lists_the_llm_and_the_embedding_model(client, llm_stack):
    ids = {m.id for m in client.models.list().data}
    assert {llm_stack.model_name, llm_stack.embed_model_name} <= ids


def test_chat_answers_with_text(client, llm_stack):
    response = client.chat.completions.create(model=llm_stack.model_name, messages=QUESTION, max_tokens=32)
    assert response.choices[0].message.content.strip()
    assert response.choices[0].message.role == "assistant"
    assert response.usage.completion_tokens > 0


def test_prompts_use_the_models_own_chat_template(client, llm_stack):
    # FastChat's fallback one-shot template would make this ~476 prompt tokens.
    response = client.chat.completions.create(model=llm_stack.model_name, messages=QUESTION, max_tokens=8)
    assert response.usage.prompt_tokens < 60
    system = [{"role": "system", "content": "Answer in one word."}, *QUESTION]
    response = client.chat.completions.create(model=llm_stack.model_name, messages=system, max_tokens=8)
    assert response.usage.prompt_tokens < 60


def test_streamed_chat_arrives_in_pieces(client, llm_stack):
    stream = client.chat.completions.create(
        model=llm_stack.model_name, messages=QUESTION, max_tokens=32, stream=True, temperature=0
    )
    pieces, finish = streamed_text(stream)
    assert len(pieces) > 1 and "".join(pieces).strip()
    assert finish in ("stop", "length")


def test_max_tokens_is_honoured(client, llm_stack):
    story = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
    response = client.chat.completions.create(model=llm_stack.model_name, messages=story, max_tokens=5)
    assert response.usage.completion_tokens <= 5
    assert response.choices[0].finish_reason == "length"
    # langchain-openai and newer clients send max_completion_tokens instead
    response = client.chat.completions.create(model=llm_stack.model_name, messages=story, max_completion_tokens=4)
    assert response.usage.completion_tokens <= 4


def test_stop_sequences_cut_the_answer(client, llm_stack):
    count = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    full = (
        client.chat.completions.create(model=llm_stack.model_name, messages=count, max_tokens=40, temperature=0)
        .choices[0]
        .message.content
    )
    words = full.split()
    assert len(words) >= 3, full
    stop = words[len(words) // 2]
    cut = client.chat.completions.create(
        model=llm_stack.model_name, messages=count, max_tokens=40, temperature=0, stop=[stop]
    )
    text = cut.choices[0].message.content
    assert stop not in text
    assert full.startswith(text)
    assert cut.choices[0].finish_reason == "stop"
    # streamed: the stop string never leaks out, even split over tokens
    stream = client.chat.completions.create(
        model=llm_stack.model_name, messages=count, max_tokens=40, temperature=0, stop=stop, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == text


def test_temperature_zero_is_deterministic(client, llm_stack):
    answers = {
        client.chat.completions.create(model=llm_stack.model_name, messages=QUESTION, max_tokens=16, temperature=0)
        .choices[0]
        .message.content
        for _ in range(2)
    }
    assert len(answers) == 1


def test_text_completion(client, llm_stack):
    response = client.completions.create(
        model=llm_stack.model_name, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert response.choices[0].text.strip()
    assert response.usage.completion_tokens <= 8
    stream = client.completions.create(
        model=llm_stack.model_name, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream).strip()


def test_embeddings_have_384_dimensions(client, llm_stack):
    response = client.embeddings.create(model=llm_stack.embed_model_name, input=["hello world", "你好，世界", "x"])
    vectors = np.array([d.embedding for d in response.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    floats = client.embeddings.create(model=llm_stack.embed_model_name, input="hello world", encoding_format="float")
    assert np.allclose(floats.data[0].embedding, vectors[0], atol=1e-5)


def test_eight_concurrent_streams_all_complete(llm_stack):
    client = openai.AsyncOpenAI(base_url=llm_stack.openai_base_url, api_key="EMPTY", timeout=300, max_retries=0)

    async def one(i: int) -> str:
        stream = await client.chat.completions.create(
            model=llm_stack.model_name,
            messages=[{"role": "user", "content": f"Say something about the number {i}."}],
            max_tokens=16,
            stream=True,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def run_all():
        try:
            return await asyncio.gather(*(one(i) for i in range(8)))
        finally:
            await client.close()

    answers = asyncio.run(run_all())
    assert len(answers) == 8 and all(a.strip() for a in answers)


def test_langchain_chat_openai_and_embeddings(llm_stack):
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    chat = ChatOpenAI(
        base_url=llm_stack.openai_base_url, api_key="EMPTY", model=llm_stack.model_name, max_tokens=24, timeout=300
    )
    assert chat.invoke("What is the capital of France?").content.strip()
    assert "".join(chunk.content for chunk in chat.stream("Name a colour.")).strip()
    # check_embedding_ctx_length=False: otherwise langchain downloads tiktoken's vocabulary first
    embeddings = OpenAIEmbeddings(
        base_url=llm_stack.openai_base_url,
        api_key="EMPTY",
        model=llm_stack.embed_model_name,
        check_embedding_ctx_length=False,
    )
    assert len(embeddings.embed_query("hello")) == 384
    assert len(embeddings.embed_documents(["a", "b"])) == 2


def test_an_unknown_model_is_a_clear_error(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert "no-such-model" in str(info.value)


def test_api_keys_are_required_when_configured(llm_stack, tmp_path):
    port = free_port()
    env = child_env(tmp_path, **llm_stack.env, CHATCHAT_API_KEYS=json.dumps(["sk-one", "sk-two"]))
    args = ["-m", "server.openai_gateway", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running_process(args, env=env, log_path=tmp_path / "gateway.log", health_url=url + "/health"):
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer sk-two"}).status_code == 200
        keyed = openai.OpenAI(base_url=url + "/v1", api_key="sk-one", timeout=300, max_retries=0)
        answer = keyed.chat.completions.create(model=llm_stack.model_name, messages=QUESTION, max_tokens=8)
        assert answer.choices[0].message.content.strip()


def test_a_client_that_disconnects_stops_its_generation(llm_stack):
    worker = llm_stack.worker_urls[llm_stack.model_name]
    counting = ", ".join(str(i) for i in range(1, 30)) + ","  # continues for as long as it may
    body = {"model": llm_stack.model_name, "prompt": counting, "max_tokens": 2000, "temperature": 0, "stream": True}
    with httpx.stream("POST", llm_stack.gateway_url + "/v1/completions", json=body, timeout=120) as response:
        for i, _ in enumerate(response.iter_bytes()):
            if i == 3:
                assert httpx.get(worker + "/health").json()["inflight"] == 1
            if i >= 5:
                break
    deadline = time.monotonic() + 10
    while httpx.get(worker + "/health").json()["inflight"] != 0:
        assert time.monotonic() < deadline, "generation went on after the client left"
        time.sleep(0.2)


def test_a_real_model_stuck_in_a_loop_is_stopped(client, llm_stack):
    # Greedy SmolLM2-135M continues this by repeating the sentence until max_tokens.
    looped = " ".join(["The REST API uses port 7861."] * 5)
    ask = [{"role": "user", "content": f"{looped} Continue."}]
    response = client.chat.completions.create(model=llm_stack.model_name, messages=ask, max_tokens=150, temperature=0)
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens < 60
    assert response.choices[0].message.content.count("7861") == 1
