"""'Enhance prompt' speaks the OpenAI chat-completions protocol and fails with plain words."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from steadyframe.server.prompt_enhance import PromptEnhanceError, enhance_prompt
from steadyframe.settings import Settings


def run(coro):
    return asyncio.run(coro)


def test_enhance_posts_a_chat_completion_and_returns_the_answer() -> None:
    seen: list[httpx.Request] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"choices": [{"message": {"role": "assistant", "content": ' "A fox leaps." '}}]}
        )

    settings = Settings(llm_base_url="http://llm.local/v1/", llm_api_key="k", llm_model="small")
    text = run(enhance_prompt("fox", settings, transport=httpx.MockTransport(endpoint)))
    assert text == "A fox leaps."
    request = seen[0]
    assert str(request.url) == "http://llm.local/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer k"
    body = json.loads(request.content)
    assert body["model"] == "small" and body["messages"][-1] == {"role": "user", "content": "fox"}


@pytest.mark.parametrize(
    ("response", "words"),
    [
        (httpx.Response(500, text="boom"), "HTTP 500"),
        (httpx.Response(200, json={"unexpected": True}), "unexpected format"),
        (httpx.Response(200, json={"choices": [{"message": {"content": "  "}}]}), "empty"),
    ],
)
def test_enhance_failures_are_explained(response: httpx.Response, words: str) -> None:
    settings = Settings(llm_base_url="http://llm.local/v1")
    with pytest.raises(PromptEnhanceError, match=words):
        run(enhance_prompt("fox", settings, transport=httpx.MockTransport(lambda _: response)))


def test_enhance_unreachable_or_unconfigured() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(PromptEnhanceError, match="could not be reached"):
        run(enhance_prompt("fox", Settings(llm_base_url="http://llm.local"), transport=httpx.MockTransport(refuse)))
    with pytest.raises(PromptEnhanceError, match="not configured"):
        run(enhance_prompt("fox", Settings(llm_base_url=None)))
