"""A snapshot out of the catalog: the formats (exporters.py), the export (export.py), the
dataset card (card.py), the Hub (hub.py) and the one export step of a run (publish.py).
Imports storage.catalog, storage.tables and storage.reports (the card shows the report's
figures)."""
