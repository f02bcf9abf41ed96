"""Property-based fuzzing of every operation in the live server's OpenAPI schema: no 5xx, ever.

Schemathesis generates bodies, forms and queries (valid and invalid) from the schema and sends
them to a real server process; any 5xx answer or an answer that breaks its schema fails.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.helpers import create_kb, upload

# A few dozen cases per operation: the whole module runs in about a minute on two cores.
MAX_EXAMPLES = 10
KB = "fuzz_kb"


@pytest.fixture(scope="module")
def fuzz_schema(api_server, client):
    create_kb(client, KB)
    upload(client, KB, {"seed.txt": b"Seed document so searches and listings have something to find."})
    return schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")


# Other areas (chat, models) fuzz their own routes; here the knowledge-base, server and other ones.
# /other/embed_texts is fuzzed below with small lists: schema-sized ones (2048 long texts) take minutes on a CPU.
schema = schemathesis.pytest.from_fixture("fuzz_schema").include(path_regex=r"^/(knowledge_base|server)/")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, api_server):
    response = case.call(base_url=api_server.url, timeout=120)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:500]}"
    if response.status_code == 422:
        assert "detail" in response.json()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
EMBED_BODIES = st.fixed_dictionaries(
    {"texts": st.lists(st.text(max_size=60), max_size=4) | JSON_VALUES},
    optional={"embed_model": st.text(max_size=20) | JSON_VALUES, "to_query": st.booleans() | JSON_VALUES},
)


@given(body=EMBED_BODIES | JSON_VALUES)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_embed_texts_never_fails_with_5xx(api_server, body):
    response = httpx.post(f"{api_server.url}/other/embed_texts", json=body, timeout=120)
    assert response.status_code < 500, response.text[:500]
    if response.status_code == 200 and response.json()["code"] == 200:
        assert len(response.json()["data"]) == len(body["texts"])
