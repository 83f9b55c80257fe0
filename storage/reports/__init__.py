"""Read-only figures over the catalog: the run report (report.py), what `synth eval` reads
and compares (evaluation.py), how much an export copies a test set (decontam_report.py).
Imports storage.catalog and storage.tables."""
