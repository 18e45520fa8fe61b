"""Optional "enhance prompt": rewrite a short prompt into a detailed one via an OpenAI-compatible chat API.

Used only when ``settings.llm_base_url`` is set (the UI hides the button otherwise).
"""

from __future__ import annotations

import httpx

from steadyframe.settings import Settings

SYSTEM_PROMPT = (
    "You rewrite short video ideas into one detailed prompt for a text-to-video model. Describe the subject, "
    "its motion, the setting, the lighting and the camera in about 80 words of plain prose. Keep the user's "
    "intent; add nothing violent or explicit. Answer with the prompt only."
)
TIMEOUT_S = 30.0


class PromptEnhanceError(Exception):
    """The endpoint is not configured, unreachable, or answered something unusable (message is user text)."""


async def enhance_prompt(prompt: str, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> str:
    """The rewritten prompt; raises ``PromptEnhanceError`` with a plain explanation on any failure."""
    if not settings.llm_base_url:
        raise PromptEnhanceError("prompt enhancement is not configured on this server")
    if not prompt.strip():
        raise PromptEnhanceError("write a short prompt first; enhancing expands it")
    headers = {"Authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
    body = {
        "model": settings.llm_model,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt.strip()}],
        "temperature": 0.7,
        "max_tokens": 250,
    }
    url = settings.llm_base_url.rstrip("/") + "/chat/completions"
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S, transport=transport) as client:
            response = await client.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise PromptEnhanceError(f"the prompt service could not be reached ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise PromptEnhanceError(f"the prompt service answered HTTP {response.status_code}")
    try:
        text = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise PromptEnhanceError("the prompt service answered in an unexpected format") from None
    if not isinstance(text, str) or not text.strip():
        raise PromptEnhanceError("the prompt service returned an empty prompt")
    return text.strip().strip('"').strip()
