"""Errors the store raises; each message says what happened and what to do."""

from bitswarm.errors import BitswarmError


class StoreError(BitswarmError):
    """Base class for every store failure a caller may want to report to a person."""


class InvalidCID(StoreError, ValueError):
    """A string that is not a well-formed CID."""


class BlobNotFound(StoreError, KeyError):
    """The store holds no blob with this CID."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "blob not found"


class CorruptBlob(StoreError):
    """A blob whose bytes no longer hash to its CID; it is never returned to the caller."""


class UnsupportedEntry(StoreError):
    """A path the store cannot hold (symlink, device, socket, bad name) or a malformed archive."""


class BlobPinned(StoreError):
    """A blob asked to be removed that something still names (a label, a record, another blob)."""


class PinScanError(StoreError):
    """A record that may pin blobs could not be read, so nothing is removed: gc keeps what it cannot rule on."""
