"""Content-addressed blob store: every model, dataset, checkpoint and episode is a blob named by its CID."""

from bitswarm.store.blobstore import BlobInfo, BlobStore
from bitswarm.store.cid import cid_of_bytes, parse_cid
from bitswarm.store.errors import (
    BlobNotFound,
    CorruptBlob,
    InvalidCID,
    StoreError,
    UnsupportedEntry,
)

__all__ = [
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "CorruptBlob",
    "InvalidCID",
    "StoreError",
    "UnsupportedEntry",
    "cid_of_bytes",
    "parse_cid",
]
