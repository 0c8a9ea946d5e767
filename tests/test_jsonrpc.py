"""Classifying decoded JSON-RPC 2.0 messages, and refusing what is not one."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.jsonrpc import Kind, classify, error_response, notification, request, response

ERROR = {"code": -32601, "message": "method not found"}


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        pytest.param({"jsonrpc": "2.0", "id": 1, "method": "ping"}, Kind.REQUEST, id="request-int-id"),
        pytest.param({"jsonrpc": "2.0", "id": 0, "method": "ping"}, Kind.REQUEST, id="request-zero-id"),
        pytest.param({"jsonrpc": "2.0", "id": "a1", "method": "ping"}, Kind.REQUEST, id="request-str-id"),
        pytest.param(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}},
            Kind.REQUEST,
            id="request-params",
        ),
        pytest.param({"jsonrpc": "2.0", "method": "notifications/initialized"}, Kind.NOTIFICATION, id="notification"),
        pytest.param(
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
            Kind.NOTIFICATION,
            id="notification-params",
        ),
        pytest.param({"jsonrpc": "2.0", "id": 1, "result": {}}, Kind.RESPONSE, id="response"),
        pytest.param({"jsonrpc": "2.0", "id": "a1", "result": None}, Kind.RESPONSE, id="response-null-result"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "error": ERROR}, Kind.ERROR, id="error"),
        pytest.param({"jsonrpc": "2.0", "id": None, "error": ERROR}, Kind.ERROR, id="error-null-id"),
    ],
)
def test_a_well_formed_message_is_classified(message: dict[str, Any], kind: Kind) -> None:
    assert classify(message) is kind


@pytest.mark.parametrize(
    "message",
    [
        pytest.param([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], id="batch"),
        pytest.param("ping", id="string"),
        pytest.param(None, id="null"),
        pytest.param({"id": 1, "method": "ping"}, id="no-jsonrpc"),
        pytest.param({"jsonrpc": "1.0", "id": 1, "method": "ping"}, id="wrong-version"),
        pytest.param({"jsonrpc": "2.0", "id": True, "method": "ping"}, id="bool-id"),
        pytest.param({"jsonrpc": "2.0", "id": None, "method": "ping"}, id="null-id"),
        pytest.param({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, id="float-id"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "method": ""}, id="empty-method"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "method": 7}, id="non-string-method"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}, id="list-params"),
        pytest.param({"jsonrpc": "2.0", "method": "notifications/x", "params": "x"}, id="string-params"),
        pytest.param({"jsonrpc": "2.0", "result": {}}, id="response-without-id"),
        pytest.param({"jsonrpc": "2.0", "error": ERROR}, id="error-without-id"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "result": {}, "error": ERROR}, id="result-and-error"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "error": "bad"}, id="error-not-object"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "error": {"message": "x"}}, id="error-without-code"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "error": {"code": "x", "message": "x"}}, id="error-string-code"),
        pytest.param({"jsonrpc": "2.0", "id": 1}, id="id-only"),
    ],
)
def test_a_malformed_message_is_not_classified(message: Any) -> None:
    assert classify(message) is None


def test_the_builders_make_messages_of_their_kind() -> None:
    assert classify(request(1, "ping")) is Kind.REQUEST
    assert classify(request("a", "tools/call", {"name": "x"})) is Kind.REQUEST
    assert classify(notification("notifications/initialized")) is Kind.NOTIFICATION
    assert classify(response(1, {})) is Kind.RESPONSE
    assert classify(error_response(1, ERROR)) is Kind.ERROR


def test_responses_and_errors_with_ids_or_codes_of_the_wrong_type_are_not_messages() -> None:
    assert classify({"jsonrpc": "2.0", "id": True, "result": {}}) is None
    assert classify({"jsonrpc": "2.0", "id": 1, "error": {"code": True, "message": "x"}}) is None
    assert classify({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "x"}}) is Kind.ERROR
