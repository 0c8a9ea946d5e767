"""The fixture's 2026-07-28 multi-round-trip tools and prompt (SEP-2322), for the conformance suite.

Each asks the client through an ``input_required`` result with the input keys
the scenarios name, and finishes once the retry brings the answers. The
``requestState`` the fixture hands out is its own: the tool, the round and
what was answered so far, signed with a key of this process, so a state that
was changed is refused. ``test_missing_capability`` refuses a client that did
not declare sampling with ``-32021``, as the stateless era says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final

import mcp_types as types
from mcp.shared.exceptions import MCPError

__all__ = ["PROMPTS", "TOOLS", "Ask", "asker", "call_tool", "get_prompt", "responses"]

_MODERN: Final = frozenset({"2026-07-28"})

_KEY: Final = secrets.token_bytes(32)

Questions = dict[str, dict[str, Any]]
Ask = Callable[[Questions], Awaitable[dict[str, Any]]]
"""Asks the client mid-call, the session era's way: the answers by key."""


def _elicit(message: str, field: str, kind: str = "string") -> dict[str, Any]:
    schema = {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def _sample(text: str, max_tokens: int) -> dict[str, Any]:
    message = {"role": "user", "content": {"type": "text", "text": text}}
    return {"method": "sampling/createMessage", "params": {"messages": [message], "maxTokens": max_tokens}}


_ROOTS: Final = {"method": "roots/list", "params": {}}

# tool -> the rounds of questions it asks, each with the key the scenario expects.
_ROUNDS: Final[dict[str, list[dict[str, dict[str, Any]]]]] = {
    "test_input_required_result_elicitation": [{"user_name": _elicit("What is your name?", "name")}],
    "test_input_required_result_sampling": [{"capital_question": _sample("What is the capital of France?", 100)}],
    "test_input_required_result_list_roots": [{"client_roots": _ROOTS}],
    "test_input_required_result_request_state": [{"confirm": _elicit("Please confirm", "ok", "boolean")}],
    "test_input_required_result_tampered_state": [{"confirm": _elicit("Please confirm", "ok", "boolean")}],
    "test_input_required_result_multiple_inputs": [
        {
            "user_name": _elicit("What is your name?", "name"),
            "greeting": _sample("Generate a greeting", 50),
            "client_roots": _ROOTS,
        }
    ],
    "test_input_required_result_multi_round": [
        {"step1": _elicit("Step 1: What is your name?", "name")},
        {"step2": _elicit("Step 2: What is your favorite color?", "color")},
    ],
    "test_streaming_elicitation": [{"answer": _elicit("Anything to add?", "note")}],
}
_STATEFUL: Final = frozenset(
    {
        "test_input_required_result_request_state",
        "test_input_required_result_tampered_state",
        "test_input_required_result_multiple_inputs",
        "test_input_required_result_multi_round",
    }
)
_NEEDS: Final = {"elicitation/create": "elicitation", "sampling/createMessage": "sampling", "roots/list": "roots"}

TOOLS: Final = [*_ROUNDS, "test_input_required_result_capabilities", "test_missing_capability"]
PROMPTS: Final = ["test_input_required_result_prompt"]


def _seal(state: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(state, sort_keys=True).encode()).decode()
    return f"{body}.{hmac.new(_KEY, body.encode(), hashlib.sha256).hexdigest()}"


def _open(token: str | None, tool: str) -> dict[str, Any]:
    body, _, mac = (token or "").partition(".")
    if not hmac.compare_digest(mac, hmac.new(_KEY, body.encode(), hashlib.sha256).hexdigest()):
        raise MCPError(code=types.INVALID_PARAMS, message="requestState failed its integrity check")
    state: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body))
    if state.get("tool") != tool:
        raise MCPError(code=types.INVALID_PARAMS, message="requestState belongs to another tool")
    return state


def _declared(capabilities: types.ClientCapabilities | None) -> set[str]:
    if capabilities is None:
        return set()
    return {name for name in ("elicitation", "sampling", "roots") if getattr(capabilities, name) is not None}


class _Asked:
    """A round's questions, and the state its retry brings back (sealed), if the tool keeps one."""

    def __init__(self, questions: Questions, state: dict[str, Any] | None) -> None:
        self.questions = questions
        self.token = _seal(state) if state is not None else None

    def result(self) -> types.InputRequiredResult:
        sealed = {"requestState": self.token} if self.token else {}
        return types.InputRequiredResult.model_validate(
            {"resultType": "input_required", "inputRequests": self.questions, **sealed}
        )


def _answers(responses: Any) -> dict[str, Any]:
    return {key: value for key, value in (responses or {}).items() if isinstance(value, dict)}


def _rounds(tool: str, responses: Any, token: str | None) -> _Asked | dict[str, Any]:
    """The next round's questions, or every answer once all rounds are answered."""
    rounds = _ROUNDS[tool]
    stateful = tool in _STATEFUL
    state: dict[str, Any] = {"tool": tool, "round": 0, "answers": {}}
    if stateful and token is not None:
        state = _open(token, tool)
    answers = {**state["answers"], **_answers(responses)}
    for index, questions in enumerate(rounds):
        missing = {key: question for key, question in questions.items() if key not in answers}
        if missing or (stateful and index > state["round"]):
            # Asked again for what is missing (the specification's advice, rather than an error).
            kept = {key: answers[key] for key in answers if key not in questions}
            return _Asked(missing or questions, {"tool": tool, "round": index, "answers": kept} if stateful else None)
    return answers


def _content(answer: Any) -> str:
    if not isinstance(answer, dict):
        return str(answer)
    content = answer.get("content")
    if isinstance(content, dict) and content.get("type") == "text":
        return str(content.get("text"))
    return json.dumps(content if content is not None else answer)


async def call_tool(
    name: str, responses: Any, token: str | None, capabilities: types.ClientCapabilities | None, ask: Ask | None
) -> types.CallToolResult | types.InputRequiredResult | None:
    """The answer of one of these tools, or None when ``name`` is not one of them.

    Without ``ask`` (2026-07-28) a round's questions are the result; with it (the session era) they
    are asked mid-call and the tool goes on.
    """
    declared = _declared(capabilities)
    if name == "test_missing_capability":
        if "sampling" not in declared:
            data: dict[str, Any] = {"requiredCapabilities": {"sampling": {}}}
            raise MCPError(code=-32021, message="this tool needs the sampling capability", data=data)
        return _text("sampling is declared")
    if name == "test_input_required_result_capabilities":
        # Only what the client can answer is asked (SEP-2322: never a method it did not declare).
        offered = {"user_name": _elicit("What is your name?", "name"), "client_roots": _ROOTS}
        offered["capital_question"] = _sample("What is the capital of France?", 100)
        questions = {key: question for key, question in offered.items() if _NEEDS[question["method"]] in declared}
        if questions and ask is not None:
            responses = await ask(questions)
        if not questions or _answers(responses).keys() >= questions.keys():
            return _text("answered with what the client can do")
        return _Asked(questions, None).result()
    if name not in _ROUNDS:
        return None
    outcome = _rounds(name, responses, token)
    while isinstance(outcome, _Asked):
        if ask is None:
            return outcome.result()
        outcome = _rounds(name, await ask(outcome.questions), outcome.token)
    if name == "test_input_required_result_elicitation":
        user = outcome["user_name"].get("content") or {}
        return _text(f"Hello, {user.get('name') if isinstance(user, dict) else user}!")
    if name in ("test_input_required_result_request_state", "test_input_required_result_tampered_state"):
        return _text("state-ok: the requestState was verified")
    return _text("; ".join(f"{key}={_content(value)}" for key, value in sorted(outcome.items())))


async def get_prompt(
    name: str, responses: Any, ask: Ask | None
) -> types.GetPromptResult | types.InputRequiredResult | None:
    """``test_input_required_result_prompt``: the context it uses is asked for first."""
    if name != "test_input_required_result_prompt":
        return None
    answer = _answers(responses).get("user_context")
    if answer is None:
        questions = {"user_context": _elicit("What context should the prompt use?", "context")}
        if ask is None:
            return _Asked(questions, None).result()
        answer = _answers(await ask(questions)).get("user_context") or {}
    context = answer.get("content") or {}
    text = context.get("context") if isinstance(context, dict) else context
    message = {"role": "user", "content": {"type": "text", "text": f"Use this context: {text}"}}
    return types.GetPromptResult.model_validate({"messages": [message]})


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult.model_validate({"content": [{"type": "text", "text": text}]})


def responses(params: types.CallToolRequestParams | types.GetPromptRequestParams) -> dict[str, Any]:
    given = params.input_responses or {}
    return {key: value.model_dump(mode="json", by_alias=True, exclude_none=True) for key, value in given.items()}


def asker(ctx: Any) -> Ask | None:
    """How a session-era request asks its client mid-call (None in 2026-07-28: the result asks)."""
    if ctx.protocol_version in _MODERN:
        return None
    session = ctx.session

    async def ask(questions: Questions) -> dict[str, Any]:
        answers: dict[str, Any] = {}
        for key, question in questions.items():
            params = question["params"]
            answer: Any
            if question["method"] == "elicitation/create":
                answer = await session.elicit(
                    params["message"], params["requestedSchema"], related_request_id=ctx.request_id
                )
            elif question["method"] == "sampling/createMessage":
                messages = [types.SamplingMessage.model_validate(m) for m in params["messages"]]
                answer = await session.create_message(
                    messages, max_tokens=params["maxTokens"], related_request_id=ctx.request_id
                )
            else:
                answer = await session.list_roots()
            answers[key] = answer.model_dump(mode="json", by_alias=True, exclude_none=True)
        return answers

    return ask
