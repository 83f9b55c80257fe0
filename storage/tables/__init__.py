"""What the catalog holds, one module per kind of thing: datasets (and their members),
trees, snapshots, versions, embeddings, probes; each reads and writes its own tables.
Imports storage.catalog only."""
