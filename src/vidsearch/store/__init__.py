"""The feature store, indexes and search."""

from vidsearch.store.store import (FeatureDatabase, FingerprintMismatch, RowMeta, Store, StoreCorrupted, StoreError,
                                   StoreNotFound, add, compact, remove, write)

__all__ = ["FeatureDatabase", "FingerprintMismatch", "RowMeta", "Store", "StoreCorrupted", "StoreError",
           "StoreNotFound", "add", "compact", "remove", "write"]
