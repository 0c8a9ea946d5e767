"""Sealed ``requestState``: what a stateless client carries between the rounds of one call.

The hub hands a client a ``requestState`` when a call it made needs the
client's input (an ``input_required`` result). The state is encrypted and
authenticated (AES-GCM) with a key only the hub holds, and bound to the
caller (their tenant and principal are the authenticated data, so another
caller's state does not even open); it names the parked call, the round and
the request it belongs to, and expires. A state is good for one retry: the
round's nonce changes when it is used.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from connectors import jsonrpc
from hub.context import Caller
from hub.errors import BadRequestState

__all__ = ["Claims", "StateSeal"]

_NONCE_BYTES: Final = 12
_MAX_STATE_CHARS: Final = 4096
_ALPHABET: Final = re.compile(r"^[A-Za-z0-9_-]+$")  # unpadded base64url, written one way only


@dataclass(frozen=True, slots=True)
class Claims:
    """What a sealed state says."""

    call: str
    """The parked call's id."""
    round: str
    """The nonce of the round the state answers; used once."""
    method: str
    name: str
    """The tool or prompt name, or the resource URI, the call was made for."""
    expires: float
    """Unix time after which the state is refused."""


def _bound(caller: Caller) -> bytes:
    return f"{caller.tenant}\x00{caller.principal}".encode()


class StateSeal:
    """Seals and opens request states with one key (random per hub run unless one is given)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = AESGCM(key if key is not None else AESGCM.generate_key(bit_length=256))

    def rekey(self, key: bytes) -> None:
        """Seal and open with ``key`` from now on (the key replicas share)."""
        self._aead = AESGCM(key)

    def seal(self, claims: Claims, caller: Caller) -> str:
        plain = jsonrpc.dumps([claims.call, claims.round, claims.method, claims.name, claims.expires])
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plain, _bound(caller))
        return base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("=")

    def open(self, state: object, caller: Caller, *, now: float | None = None) -> Claims:
        """The claims of a state this hub sealed for ``caller``.

        Raises: BadRequestState: not a state, forged or changed, another caller's, or expired.
        """
        if not isinstance(state, str) or len(state) > _MAX_STATE_CHARS or not _ALPHABET.match(state):
            raise BadRequestState("requestState is not one this hub issued")
        try:
            raw = base64.urlsafe_b64decode(state + "=" * (-len(state) % 4))
            nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
            plain = self._aead.decrypt(nonce, sealed, _bound(caller))
            call, round_, method, name, expires = jsonrpc.loads(plain)
        except (binascii.Error, ValueError, InvalidTag, TypeError):
            raise BadRequestState("requestState is not one this hub issued") from None
        if (now if now is not None else time.time()) > float(expires):
            raise BadRequestState("requestState has expired; make the request again")
        return Claims(str(call), str(round_), str(method), str(name), float(expires))
