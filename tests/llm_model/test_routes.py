"""``/llm_model/*`` routes against the real LLM stack: list, config, change and stop."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.helpers.processes import REPO_ROOT, child_env, free_port, log_tail

pytestmark = pytest.mark.slow

ONLINE = {"online-x": {"api_base_url": "http://10.1.2.3:9999/v1", "api_key": "sk-very-secret", "model_name": "gpt-x"}}


@pytest.fixture(scope="module")
def api(llm_stack):
    from configs import reload_settings
    from server.llm_model.router import router

    with pytest.MonkeyPatch.context() as patch:
        for key, value in llm_stack.env.items():
            patch.setenv(key, value)
        patch.setenv("CHATCHAT_ONLINE_LLM_MODEL", json.dumps(ONLINE))
        reload_settings()
        app = FastAPI()
        app.include_router(router, prefix="/llm_model")
        with TestClient(app) as client:
            yield client
    reload_settings()


def running(api) -> dict:
    body = api.post("/llm_model/list_running_models", json={"placeholder": None}).json()
    assert body["code"] == 200, body
    return body["data"]


def test_running_models_include_the_default_with_its_device(api, llm_stack):
    models = running(api)
    assert llm_stack.model_name in models
    assert models[llm_stack.model_name]["device"] == "cpu"
    assert llm_stack.embed_model_name not in models  # embeddings are not chat models
    assert api.post("/llm_model/list_running_models").json()["code"] == 200  # no body at all


class CountingHandler(BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self):  # noqa: N802
        CountingHandler.hits += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"models": ["evil"], "address": "", "code": 200, "msg": "pwned"}')

    def log_message(self, *args):
        pass


def test_a_client_sent_controller_address_is_ignored(api, llm_stack):
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), CountingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    elsewhere = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        body = api.post("/llm_model/list_running_models", json={"controller_address": elsewhere}).json()
        assert llm_stack.model_name in body["data"] and "evil" not in body["data"]
        api.post("/llm_model/stop", json={"model_name": "not-running", "controller_address": elsewhere})
        api.post("/llm_model/change", json={"model_name": "x", "new_model_name": "y", "controller_address": elsewhere})
        assert CountingHandler.hits == 0
    finally:
        server.shutdown()


def test_config_models_and_secrets(api, llm_stack):
    body = api.post("/llm_model/list_config_models", json={"types": ["local", "online"]}).json()
    assert llm_stack.model_name in body["data"]["local"]
    assert body["data"]["local"][llm_stack.model_name]["model_path_exists"] is True
    assert "online-x" in body["data"]["online"]
    config = api.post("/llm_model/get_model_config", json={"model_name": "online-x"}).json()["data"]
    assert config["online_api"] is True and config["model_name"] == "gpt-x"
    response = api.post("/llm_model/list_config_models", json={"types": ["local", "online", "worker"]})
    for text in (response.text, json.dumps(config)):
        assert "sk-very-secret" not in text and "10.1.2.3" not in text


def test_stopping_an_unknown_model_is_an_error_envelope(api):
    body = api.post("/llm_model/stop", json={"model_name": "not-running"}).json()
    assert body["code"] == 500 and "not-running" in body["msg"]


@pytest.fixture
def joined_worker(llm_stack, tmp_path):
    """``startup.py -m -n smol-a -c <controller>``: a worker joining the stack's controller, as from another machine.

    smol-a and smol-b are two names for the default model's converted folder.
    """
    from server.model_workers.model_paths import cached_folder, resolve_local_model

    folder = cached_folder(resolve_local_model(llm_stack.model_name))
    if folder is None:
        pytest.skip("the converted default model is not cached (cache not writable)")
    models = tmp_path / "models"
    models.mkdir()
    for name in ("smol-a", "smol-b"):
        (models / name).symlink_to(folder, target_is_directory=True)
    overrides = {
        "CHATCHAT_MODEL_ROOT_PATH": str(models),
        "CHATCHAT_FSCHAT_MODEL_WORKERS": json.dumps({"smol-a": {"port": free_port()}}),
    }
    env = child_env(tmp_path, **{**llm_stack.env, **overrides})
    log = tmp_path / "startup.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "startup.py", "-m", "-n", "smol-a", "-c", llm_stack.controller_url],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300
        while "smol-a" not in httpx.post(llm_stack.controller_url + "/list_models", timeout=5).json()["models"]:
            assert proc.poll() is None, log_tail(log)
            assert time.monotonic() < deadline, log_tail(log)
            time.sleep(0.5)
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def test_change_replaces_the_model_in_the_running_worker_and_stop_ends_it(api, llm_stack, joined_worker):
    proc, log = joined_worker
    client = openai.OpenAI(base_url=llm_stack.openai_base_url, api_key="EMPTY", timeout=300, max_retries=0)
    question = [{"role": "user", "content": "Hi!"}]

    body = api.post("/llm_model/change", json={"model_name": "smol-a", "new_model_name": "no-such-model"}).json()
    assert body["code"] == 500 and "no-such-model" in body["msg"]
    body = api.post("/llm_model/change", json={"model_name": "smol-a", "new_model_name": llm_stack.model_name}).json()
    assert body["code"] == 500  # already running elsewhere
    assert client.chat.completions.create(model="smol-a", messages=question, max_tokens=4).choices

    body = api.post("/llm_model/change", json={"model_name": "smol-a", "new_model_name": "smol-b"}).json()
    assert body["code"] == 200, body
    models = running(api)
    assert "smol-b" in models and "smol-a" not in models
    assert client.chat.completions.create(model="smol-b", messages=question, max_tokens=4).choices[0].message.content
    assert proc.poll() is None  # same process, same port

    body = api.post("/llm_model/stop", json={"model_name": "smol-b"}).json()
    assert body["code"] == 200, body
    assert proc.wait(timeout=60) == 0  # its only worker stopped on request: the launcher ends cleanly
    assert "stopped on request" in log.read_text()
    assert "smol-b" not in running(api)
    assert llm_stack.model_name in running(api)
