"""The database engine: the Catalog (catalog.py), its tables and migrations (schema.py),
what a failing file means (faults.py), the set-based paths for millions of rows (bulk.py)
and a consistent copy (backup.py). Imports no other part of storage."""
