"""The catalog layer: DuckDB tables, run bookkeeping, curation queries and exports.
Imports synth, never prefect."""
