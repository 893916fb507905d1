"""CIDs: `sha256:` followed by the 64 lower-case hex digits of the sha256 of a blob's canonical bytes."""

from __future__ import annotations

import hashlib
import re

from bitswarm.store.errors import InvalidCID

PREFIX = "sha256:"
_CID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def cid_from_digest(hex_digest: str) -> str:
    return PREFIX + hex_digest


def cid_of_bytes(data: bytes) -> str:
    return cid_from_digest(hashlib.sha256(data).hexdigest())


def parse_cid(text: str) -> str:
    """Return the hex digest of a CID, or raise InvalidCID saying what a CID looks like."""
    if not isinstance(text, str) or not _CID_RE.match(text):
        shown = text if isinstance(text, str) and len(text) <= 80 else repr(text)[:80] + "…"
        raise InvalidCID(
            f"not a CID: {shown!s}; a CID is 'sha256:' followed by 64 lower-case hex digits"
        )
    return text[len(PREFIX):]


def is_cid(text: str) -> bool:
    return isinstance(text, str) and bool(_CID_RE.match(text))
