"""The body of a ``POST /v1/chat/completions`` that serve-llm accepts, checked field by field.

Why strict: serve-llm is a stress target for clients, and a client bug (a ``stream_options``
string, a ``max_tokens`` of ``"10"``, a NaN temperature) must come back as what the OpenAI API
answers -- HTTP 400 with a JSON error naming the field -- not as a 500 and a traceback in the
server log, and not silently accepted. Known fields are type-checked without coercion; fields this
server does not use are allowed, as the API has many more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(_Strict):
    type: str
    text: str | None = None


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool | None = None


class ChatRequest(_Strict):
    """The fields the OpenAI API defines that serve-llm reads or that clients commonly send."""

    model: str = "gpt-4.1"
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=128)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    presence_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("'stream_options' is only allowed when 'stream' is true")
        return self

    def message_dicts(self) -> list[dict[str, Any]]:
        """The messages as plain JSON objects (what the content sources read)."""
        return [m.model_dump(exclude_none=True) for m in self.messages]


@dataclass(frozen=True)
class BadRequest:
    """Why a body was refused: the message for the client and the field at fault (if one)."""

    message: str
    param: str | None = None


def _no_constant(name: str) -> Any:
    """JSON has no NaN or Infinity (Python's parser accepts them): a body with one is malformed."""
    raise ValueError(f"{name} is not JSON")


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "none"})


def _union_tag(part: object) -> bool:
    """pydantic names the member of a union in an error's location ('str', 'list[ContentPart]',
    'StreamOptions'); the client wants the field's path only (our field names are lower-case)."""
    if isinstance(part, int):
        return False
    text = str(part)
    return text in _TYPE_NAMES or not text.isidentifier() or text[:1].isupper()


def parse_chat_request(raw: bytes) -> ChatRequest | BadRequest:
    """The validated request, or why it is refused (OpenAI's wording where it has one)."""
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return BadRequest("We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return BadRequest("The request body must be a JSON object.")
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        worst = max(exc.errors(), key=lambda e: len(e["loc"]))  # the most specific of a union's failures
        param = ".".join(str(p) for p in worst["loc"] if not _union_tag(p)) or None
        where = f"'{param}'" if param else "the request"
        return BadRequest(f"Invalid value for {where}: {worst['msg']}.", param)
