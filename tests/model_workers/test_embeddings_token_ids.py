"""/v1/embeddings (and /v1/completions) refuse token-id arrays with a clear 400 instead of a bare 500.

LangChain's OpenAIEmbeddings sends token ids by default; FastChat decoded them with tiktoken, which
downloads its vocabulary (no internet here), and the ids are OpenAI's tokens anyway.
"""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(llm_stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm_stack.openai_base_url, api_key="EMPTY", timeout=300, max_retries=0)


def post(llm_stack, route: str, body: dict) -> httpx.Response:
    return httpx.post(f"{llm_stack.openai_base_url}/{route}", json=body, timeout=120)


@pytest.mark.parametrize("token_ids", [[9906, 1917], [[9906, 1917], [15339]]], ids=["ids", "lists-of-ids"])
def test_token_ids_are_a_400_that_says_to_send_strings(client, llm_stack, token_ids):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=llm_stack.embed_model_name, input=token_ids)
    assert caught.value.status_code == 400
    body = caught.value.body
    assert body["type"] == "invalid_request_error" and body["param"] == "input"
    assert "Send strings" in body["message"] and "check_embedding_ctx_length=False" in body["message"]


def test_error_body_has_the_gateways_error_shape(llm_stack):
    response = post(llm_stack, "embeddings", {"model": llm_stack.embed_model_name, "input": [[1, 2, 3]]})
    assert response.status_code == 400
    body = response.json()
    assert body["object"] == "error" and body["code"] == 40001 and body["message"].startswith("invalid 'input'")


@pytest.mark.parametrize("bad", [[], [1, "a"], [{"text": "a"}], [[]]], ids=["empty", "mixed", "objects", "empty-ids"])
def test_other_non_text_inputs_are_400(llm_stack, bad):
    response = post(llm_stack, "embeddings", {"model": llm_stack.embed_model_name, "input": bad})
    assert response.status_code == 400, response.text
    assert "non-empty list of strings" in response.json()["message"]


def test_completions_refuse_token_id_prompts(llm_stack):
    response = post(llm_stack, "completions", {"model": llm_stack.model_name, "prompt": [1, 2, 3], "max_tokens": 2})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["param"] == "prompt" and "Send strings" in body["message"]
    assert "OpenAIEmbeddings" not in body["message"]


def test_strings_and_lists_of_strings_still_embed(client, llm_stack):
    one = client.embeddings.create(model=llm_stack.embed_model_name, input="hello world")
    many = client.embeddings.create(model=llm_stack.embed_model_name, input=["hello world", "你好"])
    assert len(one.data) == 1 and len(many.data) == 2
    assert len(many.data[1].embedding) == 384
