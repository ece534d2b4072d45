"""Batch work over many images on a Dask cluster (local or by address): bulk IndexFaces into a
collection (indexing.py) and the audit's extraction into its cache (extraction.py), resumable
through a progress ledger (ledger.py); and ``faceaudit storage migrate``, which copies a data
folder's store into PostgreSQL (storage_migration.py)."""

from faceaudit.batch.extraction import extract_images
from faceaudit.batch.indexing import BatchSummary, index_images
from faceaudit.batch.sources import list_sources

__all__ = ["BatchSummary", "extract_images", "index_images", "list_sources"]
