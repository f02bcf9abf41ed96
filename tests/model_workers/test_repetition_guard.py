"""The repetition guard: which texts it calls a loop, and a looping model's stream ended by the
real worker behind the real controller and gateway (the model is scripted, the rest is real)."""

from __future__ import annotations

import openai
import pytest

from server.model_workers.repetition import RepetitionGuard
from tests.helpers.processes import child_env, free_port, running_process
from tests.helpers.stack import streamed_text

SENTENCE = "The REST API uses port 7861."
LOOP = "Sure. " + " ".join([SENTENCE] * 300)


def first_loop(text: str, guard: RepetitionGuard | None = None):
    """What the guard reports the first time a prefix of ``text`` (as streamed) is a loop."""
    guard = guard or RepetitionGuard()
    for end in range(1, len(text) + 1):
        found = guard.check(text[:end])
        if found:
            return text[:end], found
    return text, None


def test_a_sentence_repeated_back_to_back_is_caught_at_the_third_copy_and_one_copy_is_kept():
    seen, loop = first_loop(LOOP)
    assert loop is not None
    assert seen.count("7861") == 3
    assert seen[: loop.keep] == "Sure. The REST API uses port 7861."


def test_a_repeated_sentence_with_list_numbers_between_is_caught():
    text = "".join(f"{n}. It was the first ship to be destroyed.\n" for n in range(1, 8))
    seen, loop = first_loop(text)
    assert loop is not None and loop.unit == "It was the first ship to be destroyed"
    assert seen.count("destroyed") == 4
    assert text[: loop.keep] == "1. It was the first ship to be destroyed."


def test_chinese_loops_are_caught():
    _, loop = first_loop("答：" + "REST API 使用端口 7861。" * 10)
    assert loop is not None and "7861" in loop.unit


@pytest.mark.parametrize(
    "text",
    [
        "-" * 300,
        "=" * 40 + "\n" + "=" * 40 + "\n" + "=" * 40 + "\n" + "=" * 40,
        "| port | process |\n| --- | --- |\n| 7861 | API |\n| 8501 | UI |\n| 20000 | gateway |\n",
        "Go! Go! Go! Go! Go! Go!",
        "for i in range(3):\n    print(i)\nfor j in range(3):\n    print(j)\n",
        "The API uses port 7861. The web UI uses port 8501. The gateway uses port 20000. "
        "The controller uses port 20001. The API uses port 7861.",
    ],
)
def test_ordinary_answers_are_not_loops(text):
    assert first_loop(text)[1] is None


def test_zero_repeats_turns_the_guard_off():
    assert first_loop(LOOP, RepetitionGuard(repeats=0))[1] is None


# ---- the worker path: controller, scripted worker, gateway, openai client ----------------------


@pytest.fixture(scope="module")
def looping_stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("looping")
    (root / "reply.txt").write_text(LOOP, encoding="utf-8")
    record = root / "produced.txt"
    controller, worker, gateway = free_port(), free_port(), free_port()
    controller_url = f"http://127.0.0.1:{controller}"
    env = child_env(root)
    logs = root / "logs"
    with (
        running_process(
            ["-m", "server.controller", "--port", str(controller)],
            env=env,
            log_path=logs / "controller.log",
            health_url=f"{controller_url}/health",
        ),
        running_process(
            ["-m", "tests.model_workers.scripted_worker", "--model-name", "looping", "--port", str(worker)]
            + ["--controller-address", controller_url, "--script-file", str(root / "reply.txt")]
            + ["--record-file", str(record)],
            env=env,
            log_path=logs / "worker.log",
            health_url=f"http://127.0.0.1:{worker}/health",
        ),
        running_process(
            ["-m", "server.openai_gateway", "--port", str(gateway), "--controller-address", controller_url],
            env=env,
            log_path=logs / "gateway.log",
            health_url=f"http://127.0.0.1:{gateway}/health",
        ),
    ):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gateway}/v1", api_key="EMPTY", max_retries=0)
        wait_until_listed(client, "looping")
        yield client, record, logs / "worker.log"


def wait_until_listed(client: openai.OpenAI, model: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while model not in {m.id for m in client.models.list().data}:
        assert time.monotonic() < deadline, f"{model} never registered"
        time.sleep(0.2)


ASK = [{"role": "user", "content": "Which port does the REST API use?"}]


def test_a_looping_stream_ends_with_stop_and_the_generation_stops(looping_stack):
    client, record, log = looping_stack
    stream = client.chat.completions.create(model="looping", messages=ASK, max_tokens=2000, stream=True)
    pieces, finish = streamed_text(stream)
    text = "".join(pieces)
    assert finish == "stop"
    assert text.startswith("Sure. The REST API uses port 7861.") and text.count("7861") <= 3
    assert int(record.read_text()) < 40  # the script has 1,501 words: the model was stopped too
    assert "ended a repeating answer" in log.read_text()


def test_a_looping_answer_keeps_one_copy(looping_stack):
    client, _, _ = looping_stack
    reply = client.chat.completions.create(model="looping", messages=ASK, max_tokens=2000)
    assert reply.choices[0].message.content == "Sure. The REST API uses port 7861."
    assert reply.choices[0].finish_reason == "stop"


def test_an_answer_cut_before_it_loops_is_left_alone(looping_stack):
    client, _, _ = looping_stack
    reply = client.chat.completions.create(model="looping", messages=ASK, max_tokens=8)
    assert reply.choices[0].message.content == "Sure. The REST API uses port 7861. The"
    assert reply.choices[0].finish_reason == "length"
