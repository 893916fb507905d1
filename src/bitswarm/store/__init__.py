"""Content-addressed blob store: every model, dataset, checkpoint and episode is a blob named by its CID."""

from bitswarm.store.blobstore import BlobInfo, BlobStore
from bitswarm.store.cid import cid_of_bytes, parse_cid
from bitswarm.store.errors import (
    BlobNotFound,
    BlobPinned,
    CorruptBlob,
    InvalidCID,
    PinScanError,
    StoreError,
    UnsupportedEntry,
)

__all__ = [
    "BlobInfo",
    "BlobNotFound",
    "BlobPinned",
    "BlobStore",
    "CorruptBlob",
    "InvalidCID",
    "PinScanError",
    "StoreError",
    "UnsupportedEntry",
    "cid_of_bytes",
    "parse_cid",
]
