"""The one error path: every error knows its code and status; one function writes it."""

from __future__ import annotations

import logging

import pytest

from connectors.errors import CircuitOpen, UpstreamRpcError, UpstreamTooLarge, UpstreamUnavailable, error_code
from hub import errors
from hub.errors import ClientError, ShuttingDown, WireError, to_wire


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.ParseError("x"), 400, -32700),
        (errors.InvalidRequest("x"), 400, -32600),
        (errors.TooDeep("x"), 400, -32600),
        (errors.BadEventId("x"), 400, -32600),
        (errors.MissingSession("x"), 400, -32600),
        (errors.SessionNotFound(), 404, -32600),
        (errors.StreamGone("x"), 404, -32600),
        (errors.StreamConflict("x"), 409, -32600),
        (errors.MethodNotAllowed("x"), 405, -32600),
        (errors.NotAcceptable("x"), 406, -32600),
        (errors.UnsupportedMediaType("x"), 415, -32600),
        (errors.BodyTooLarge("x"), 413, -32600),
        (errors.RequestTimeout("x"), 408, -32600),
        (errors.UnsupportedVersion("x"), 400, -32022),
        (errors.SessionLimit("x"), 503, -32000),
        (errors.SessionBusy("x"), 503, -32000),
        (errors.MethodNotFound("x"), 200, -32601),
        (errors.UnknownName("x"), 200, -32602),
        (errors.UnknownResource("x"), 200, -32002),
        (UpstreamUnavailable("a", "down"), 200, -32010),
        (CircuitOpen("a", 5, 3.0), 200, -32010),
        (UpstreamTooLarge("a", "a message", 10), 200, -32012),
    ],
)
def test_each_error_goes_on_the_wire_with_its_code_and_status(error: Exception, status: int, code: int) -> None:
    wire = to_wire(error)
    assert (wire.status, wire.error["code"]) == (status, code)


def test_a_draining_hub_says_when_to_come_back() -> None:
    assert to_wire(ShuttingDown()).headers == {"retry-after": "2"}


def test_an_unexpected_exception_is_logged_and_never_leaked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        wire = to_wire(RuntimeError("secret detail"))
    assert wire == WireError({"code": -32603, "message": "internal error"})
    assert "secret detail" in caplog.text


def test_peer_codes_are_kept_when_they_are_integers() -> None:
    assert UpstreamRpcError("a", {"code": -32099, "message": "m"}).to_error() == {"code": -32099, "message": "m"}
    assert ClientError({"code": True, "message": "m"}).code == -32603
    assert error_code("7") == -32603 and error_code(7) == 7
