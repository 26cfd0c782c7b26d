"""Tests of the fake OpenAI server itself, driven by the real ``openai`` client.

If these pass, a test that points the app at the fake is testing the app, not the fake.
"""

import json
import random
import subprocess
import sys
import time

import openai
import pytest

from tests.fakes.openai_server import (
    CHAT_PATH,
    MALFORMED_CONTENT,
    MODELS_PATH,
    FakeOpenAI,
    broken_connection,
    malformed,
    ok,
    rate_limited,
    refusal,
    server_error,
    slow,
    storm,
)

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "이 쓰레기는 어떻게 버리나요?"}]


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def client(fake):
    with openai.OpenAI(api_key="test", base_url=fake.base_url, max_retries=0, timeout=2) as c:
        yield c


def schema_format(name):
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "strict": True, "schema": {"type": "object"}},
    }


def chat(client, schema=None, **options):
    extra = {"response_format": schema_format(schema)} if schema else {}
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, **extra, **options)


def test_ok_reply_is_parsed_with_usage_including_cached_tokens(fake, client):
    fake.enqueue(
        ok({"major_category": "재활용"}, prompt_tokens=321, completion_tokens=12, cached_tokens=256)
    )

    completion = chat(client)

    message = completion.choices[0].message
    assert json.loads(message.content) == {"major_category": "재활용"}
    assert message.refusal is None
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL
    assert completion.usage.prompt_tokens == 321
    assert completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == 333
    assert completion.usage.prompt_tokens_details.cached_tokens == 256


def test_string_content_is_sent_verbatim_and_default_is_empty_object(fake, client):
    fake.enqueue(ok("plain text"))

    assert chat(client).choices[0].message.content == "plain text"
    assert chat(client).choices[0].message.content == "{}"


def test_request_is_recorded_with_body_and_authorization(fake, client):
    chat(client, temperature=0)

    (request,) = fake.requests
    assert request.method == "POST"
    assert request.path == CHAT_PATH
    assert request.body["model"] == MODEL
    assert request.body["messages"] == MESSAGES
    assert request.body["temperature"] == 0
    assert request.headers["authorization"] == "Bearer test"
    assert json.loads(request.raw) == request.body
    assert request.received_at <= time.monotonic()
    assert fake.count() == 1

    fake.clear()
    assert fake.requests == []


def test_schema_queue_is_used_before_general_queue_and_defaults(fake, client):
    fake.set_default(lambda body: ok({"from": "default"}))
    fake.set_default_for_schema("rule_matching", lambda body: ok({"from": "rule default"}))
    fake.enqueue(ok({"from": "general queue"}))
    fake.enqueue_for_schema("waste_classification", ok({"from": "classification queue"}))

    def answer(schema=None):
        return json.loads(chat(client, schema=schema).choices[0].message.content)["from"]

    assert answer("waste_classification") == "classification queue"
    assert answer("waste_classification") == "general queue"
    assert answer("waste_classification") == "default"
    assert answer("rule_matching") == "rule default"
    assert answer() == "default"
    assert fake.pending() == 0

    assert len(fake.requests_for_schema("waste_classification")) == 3
    assert len(fake.requests_for_schema("rule_matching")) == 1
    assert fake.count() == 5


def test_refusal_surfaces_as_message_refusal(fake, client):
    fake.enqueue(refusal("I can't help with that."))

    message = chat(client).choices[0].message

    assert message.content is None
    assert message.refusal == "I can't help with that."


def test_rate_limit_raises_with_retry_after_header(fake, client):
    fake.enqueue(rate_limited(0.5, retry_after_ms=500))

    with pytest.raises(openai.RateLimitError) as excinfo:
        chat(client)

    exc = excinfo.value
    assert exc.status_code == 429
    assert exc.response.headers["retry-after"] == "0.5"
    assert exc.response.headers["retry-after-ms"] == "500"
    assert exc.code == "rate_limit_exceeded"
    assert exc.type == "rate_limit_error"


def test_rate_limit_is_retried_by_the_client_after_retry_after(fake):
    fake.enqueue(rate_limited(0.3))
    with openai.OpenAI(api_key="test", base_url=fake.base_url, max_retries=1, timeout=2) as c:
        chat(c)

    first, second = fake.requests
    assert second.received_at - first.received_at >= 0.25


def test_server_error_raises_internal_server_error(fake, client):
    fake.enqueue(server_error(), server_error(503))

    with pytest.raises(openai.InternalServerError) as first:
        chat(client)
    with pytest.raises(openai.InternalServerError) as second:
        chat(client)

    assert first.value.status_code == 500
    assert first.value.type == "server_error"
    assert second.value.status_code == 503


def test_slow_reply_times_out_and_server_keeps_serving(fake, client):
    fake.enqueue(slow(1.0, ok({"late": True})))

    with pytest.raises(openai.APITimeoutError):
        chat(client.with_options(timeout=0.3))

    fake.enqueue(ok({"after": "timeout"}))
    assert json.loads(chat(client).choices[0].message.content) == {"after": "timeout"}
    assert fake.count() == 2


def test_broken_connection_raises_connection_error(fake, client):
    fake.enqueue(broken_connection())

    with pytest.raises(openai.APIConnectionError) as excinfo:
        chat(client)

    assert not isinstance(excinfo.value, openai.APITimeoutError)
    assert chat(client).choices[0].message.content == "{}"


def test_malformed_content_is_not_json(fake, client):
    fake.enqueue(malformed())

    content = chat(client).choices[0].message.content

    assert content == MALFORMED_CONTENT
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)


def test_storm_splits_calls_deterministically_per_seed(fake, client):
    calls, rate, seed = 20, 0.5, 1
    rng = random.Random(seed)
    expected = [rng.random() < rate for _ in range(calls)]
    fault = rate_limited(0.2)
    fake.set_default_for_schema(
        "waste_classification",
        storm(rate=rate, fault=fault, otherwise=lambda body: ok({"ok": True}), seed=seed),
    )

    outcomes = []
    for _ in range(calls):
        try:
            chat(client, schema="waste_classification")
            outcomes.append(False)
        except openai.RateLimitError:
            outcomes.append(True)

    assert outcomes == expected
    assert 0 < sum(outcomes) < calls

    replay = storm(rate=rate, fault=fault, seed=seed)
    assert [replay({}) is fault for _ in range(calls)] == expected


def test_models_and_unknown_paths(fake, client):
    assert "gpt-4o-mini" in [model.id for model in client.models.list()]

    with pytest.raises(openai.NotFoundError) as excinfo:
        client.embeddings.create(model="text-embedding-3-small", input="x")

    assert excinfo.value.body["type"] == "invalid_request_error"
    assert fake.count(MODELS_PATH) == 1
    assert fake.count("/v1/embeddings") == 1


def test_another_process_can_reach_the_server(fake):
    script = (
        "import json, sys, urllib.request\n"
        "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
        "with opener.open(sys.argv[1] + '/models', timeout=5) as response:\n"
        "    print(json.load(response)['object'])\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script, fake.base_url],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )

    assert result.stdout.strip() == "list"
    assert fake.wait_for_requests(1, path=MODELS_PATH, timeout=1)[0].method == "GET"


def test_stop_is_prompt_even_with_a_slow_reply_in_flight():
    fake = FakeOpenAI().start()
    fake.enqueue(slow(30))
    with (
        openai.OpenAI(api_key="test", base_url=fake.base_url, max_retries=0, timeout=0.2) as c,
        pytest.raises(openai.APITimeoutError),
    ):
        chat(c)

    started = time.monotonic()
    fake.stop()

    assert time.monotonic() - started < 2
