"""The catalog layer: DuckDB tables, run bookkeeping, curation queries and exports.
Imports synth, never prefect.

One sub-package per group, each importing only the groups above it here
(tests/test_architecture.py holds the order):

    catalog/  the database engine: the Catalog, its schema, faults, bulk paths, backup
    tables/   what the catalog holds, one module per kind: datasets, trees, snapshots,
              versions, embeddings, probes
    reports/  read-only figures over the catalog: the run report, `synth eval`, decontamination
    publish/  a snapshot out of the catalog: the exporters, the card, the Hub, the export step
    runs/     a run: the ledger, its life cycle, growth, its tree, placement, imports, projection

A package's __init__.py re-exports nothing: a name has one import path, its module's
(`from storage.catalog.catalog import Catalog`)."""
