"""The catalog's schema: the one module that owns table definitions and migrations.

Ids are deterministic hashes made by the writers, and every insert ignores an id that
exists, so a retried chunk or a rerun after a crash never writes a row twice.

Version 4 made the dataset the unit: `datasets` (one row a dataset: its current target
and tree), `runs.dataset` (a run is one contribution to it; import staging runs have
none), `leaf_moves` (where samples made under another tree sit on a dataset's current
tree), `samples.seed_key` (the seed row a sample came from, by content), and versioned
snapshots (`snapshots.dataset`, `version`).

Version 5 (generation on a Ray cluster, docs/scaling.md): `requests.worker` and
`requests.node` (the replica and the Ray node that answered a request; NULL when the
flow's own process did), and `failed_chunks` (chunks a cluster gave up on after their
tries: which attempts, where they were tried, the last error).

Version 6: `embeddings` (the vector of a text under one embedding model, by the text's
hash: dedup by meaning embeds each text once across runs, storage/tables/embeddings.py).

Version 7: `samples.agreement` and `samples.n_solutions` (of the n solutions sampled for a
sample, the share its verifier accepts: for math self-consistency the majority's votes / n).
Version 8: `probes` (student-probe results: a small student fine-tuned on a set and scored
on held-out questions beside the untrained student, storage/tables/probes.py).

`samples` has no PRIMARY KEY (since version 3): keeping DuckDB's index on 10 M ids cost
more than half of a bulk ingest. Its ids stay unique because every insert goes through
`Catalog.insert_samples`, which skips ids that exist, under the catalog's lock, in a
process that holds the file alone (DuckDB's one writer per file).
"""

from __future__ import annotations

SCHEMA_VERSION = 8

TABLES: dict[str, str] = {
    "schema_version": """
        CREATE TABLE IF NOT EXISTS schema_version (
            version INTEGER PRIMARY KEY,
            applied_at TIMESTAMP DEFAULT current_timestamp
        )""",
    "datasets": """
        CREATE TABLE IF NOT EXISTS datasets (
            dataset VARCHAR PRIMARY KEY,         -- the recipe's `dataset` (default: task.name)
            task_name VARCHAR NOT NULL,
            target INTEGER NOT NULL DEFAULT 0,   -- accepted samples the dataset is growing to
            tree_id VARCHAR,                     -- the tree its leaves are counted on now
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )""",
    "runs": """
        CREATE TABLE IF NOT EXISTS runs (
            run_id VARCHAR PRIMARY KEY,          -- the recipe hash: a rerun resumes the same run
            name VARCHAR NOT NULL,
            dataset VARCHAR,                     -- the dataset this run contributes to (NULL: an import's staging run)
            kind VARCHAR NOT NULL DEFAULT 'generate', -- generate / import
            target INTEGER,                      -- the dataset target this run planned for
            base_hash VARCHAR,                   -- the recipe hash without the target: growth steps share it
            pid INTEGER,                         -- the process that last started it, and where
            host VARCHAR,
            recipe JSON NOT NULL,                -- the recipe as validated (no secrets: keys are env var names)
            recipe_hash VARCHAR NOT NULL,
            backend VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            status VARCHAR NOT NULL,             -- running / finished / short / failed / interrupted
            strategy VARCHAR,                    -- the strategy (or mix) actually used
            strategy_reason VARCHAR,             -- why: the budget rule's verdict, or 'fixed by recipe'
            tree_id VARCHAR,
            attempts INTEGER NOT NULL DEFAULT 1, -- how many times the run was started
            started_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            message VARCHAR                      -- the last thing the run said of itself (shortfall, failure)
        )""",
    "trees": """
        CREATE TABLE IF NOT EXISTS trees (
            tree_id VARCHAR PRIMARY KEY,         -- hash of task, tree settings, model, seed
            task_name VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            settings JSON NOT NULL,
            source VARCHAR NOT NULL,             -- built / imported
            status VARCHAR NOT NULL,             -- complete / partial
            rounds INTEGER NOT NULL DEFAULT 0,   -- sequential backend rounds it cost
            requests INTEGER NOT NULL DEFAULT 0,
            prompt_tokens BIGINT NOT NULL DEFAULT 0,
            completion_tokens BIGINT NOT NULL DEFAULT 0,
            created_at TIMESTAMP NOT NULL
        )""",
    "tree_nodes": """
        CREATE TABLE IF NOT EXISTS tree_nodes (
            tree_id VARCHAR NOT NULL,
            node_id VARCHAR NOT NULL,
            parent_id VARCHAR,
            depth INTEGER NOT NULL,
            dimension VARCHAR,                   -- the dimension whose value this node fixes
            value VARCHAR,                       -- that value (NULL at the root and on infinite nodes)
            value_list JSON,                     -- infinite nodes: the whole list, one drawn per sample
            path JSON NOT NULL,                  -- [[dimension, value], ...] from the root
            is_leaf BOOLEAN NOT NULL,
            infinite BOOLEAN NOT NULL DEFAULT false,
            status VARCHAR NOT NULL,             -- split / leaf
            reason VARCHAR,                      -- why a leaf: max_depth, max_leaves, unsplittable: ...
            PRIMARY KEY (tree_id, node_id)
        )""",
    "requests": """
        CREATE TABLE IF NOT EXISTS requests (
            request_id VARCHAR PRIMARY KEY,
            run_id VARCHAR,                      -- NULL for tree-building requests
            tree_id VARCHAR,
            stage VARCHAR NOT NULL,              -- generate / answer / pivots / dimension / expand / verify / judge
            strategy VARCHAR,
            leaf_id VARCHAR,
            template VARCHAR,
            template_hash VARCHAR,
            prompt_hash VARCHAR NOT NULL,
            sampling JSON,
            raw_text VARCHAR,
            finish_reason VARCHAR,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            latency_s DOUBLE,
            error VARCHAR,
            created_at TIMESTAMP NOT NULL,
            sample_id VARCHAR,                   -- the attempt it was made for (generation requests, schema >= 4)
            worker VARCHAR,                      -- the Ray replica that answered it (schema >= 5; NULL: in process)
            node VARCHAR                         -- the Ray node that replica ran on
        )""",
    "samples": """
        CREATE TABLE IF NOT EXISTS samples (
            -- hash of run, slot and attempt; unique (see above). Hashes do not compress:
            -- storing them plain makes ingest 1.7x faster for a 1.5x bigger id column
            sample_id VARCHAR NOT NULL USING COMPRESSION uncompressed,
            run_id VARCHAR NOT NULL,
            slot INTEGER NOT NULL,               -- the planned sample this attempt fills
            attempt INTEGER NOT NULL,
            leaf_id VARCHAR,
            leaf_path JSON,
            strategy VARCHAR NOT NULL,
            seed_row INTEGER,                    -- row of the seed set it was made from, if any
            request_id VARCHAR USING COMPRESSION uncompressed, -- the request whose text became this sample
            fields JSON USING COMPRESSION zstd,  -- the task's output fields, parsed (zstd: 25 % faster
            raw_text VARCHAR USING COMPRESSION zstd, -- bulk ingest and 25 % smaller than the default)
                                                 -- raw_text: kept for rejects, what the model actually said
            content_hash VARCHAR USING COMPRESSION uncompressed,
            status VARCHAR NOT NULL,             -- accepted / duplicate / rejected / filtered / dropped
            reason VARCHAR,
            duplicate_of VARCHAR,
            quality DOUBLE,                      -- the LLM judge's score (1-5), when a judge ran
            verified BOOLEAN,
            created_at TIMESTAMP NOT NULL,
            judge_rationale VARCHAR,             -- the judge's one-sentence reason (or why it failed)
            -- bulk-ingested rows: the Parquet segment (table `segments`) that holds their
            -- fields, raw_text and leaf_path, NULL in this table; read them via `samples_text`
            segment VARCHAR,
            seed_key VARCHAR,                    -- content hash of its seed row (schema >= 4)
            agreement DOUBLE,                    -- share of its sampled solutions the verifier accepts (schema >= 7)
            n_solutions INTEGER                  -- solutions sampled for it (NULL: not verified)
        )""",
    "failed_chunks": """
        CREATE TABLE IF NOT EXISTS failed_chunks (
            run_id VARCHAR NOT NULL,
            chunk_id VARCHAR NOT NULL,           -- hash of its (slot, attempt) pairs
            attempts JSON NOT NULL,              -- [[slot, attempt], ...]: nothing of them was written
            tries INTEGER NOT NULL,
            workers JSON,                        -- the replicas that tried it, in order
            error VARCHAR,                       -- the last failure
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (run_id, chunk_id)
        )""",
    "segments": """
        CREATE TABLE IF NOT EXISTS segments (
            segment VARCHAR PRIMARY KEY,         -- file name in the catalog's segment folder
            n_rows BIGINT NOT NULL,
            bytes BIGINT NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""",
    "leaf_targets": """
        CREATE TABLE IF NOT EXISTS leaf_targets (
            run_id VARCHAR NOT NULL,
            leaf_id VARCHAR NOT NULL,            -- '' for a run without a tree
            label VARCHAR NOT NULL,
            target INTEGER NOT NULL,             -- accepted samples the leaf should end with
            existing INTEGER NOT NULL DEFAULT 0, -- rows of the rebalanced dataset it held before
            PRIMARY KEY (run_id, leaf_id)
        )""",
    "leaf_moves": """
        CREATE TABLE IF NOT EXISTS leaf_moves (
            tree_id VARCHAR NOT NULL,            -- the tree the sample is placed on
            sample_id VARCHAR NOT NULL,          -- made under another tree (or none)
            leaf_id VARCHAR,                     -- its leaf on this tree; NULL: the classifier placed it nowhere
            from_leaf VARCHAR,                   -- its leaf where it was made
            request_id VARCHAR,                  -- the last classify request
            run_id VARCHAR,                      -- the run that placed it (its report says what moved)
            reason VARCHAR,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (tree_id, sample_id)
        )""",
    "snapshots": """
        CREATE TABLE IF NOT EXISTS snapshots (
            snapshot_id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL UNIQUE,
            run_id VARCHAR NOT NULL,
            dataset VARCHAR,                     -- versioned snapshots of a dataset: v1, v2, ...
            version INTEGER,
            n_samples INTEGER NOT NULL,
            test_fraction DOUBLE NOT NULL DEFAULT 0,  -- the split's settings, so it can be retaken exactly
            seed BIGINT NOT NULL DEFAULT 0,
            created_at TIMESTAMP NOT NULL
        )""",
    "snapshot_samples": """
        CREATE TABLE IF NOT EXISTS snapshot_samples (
            snapshot_id VARCHAR NOT NULL,
            sample_id VARCHAR NOT NULL,
            split VARCHAR NOT NULL DEFAULT 'train',
            first_version INTEGER,               -- versioned snapshots: the version that first held the row
            PRIMARY KEY (snapshot_id, sample_id)
        )""",
    "embeddings": """
        CREATE TABLE IF NOT EXISTS embeddings (
            model VARCHAR NOT NULL,              -- the embedding model's name and weight hash
            text_hash VARCHAR NOT NULL,          -- sha256 of the text embedded (32 hex)
            vector FLOAT[] NOT NULL,             -- unit length
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (model, text_hash)
        )""",
    "probes": """
        CREATE TABLE IF NOT EXISTS probes (
            probe_id VARCHAR PRIMARY KEY,        -- hash of what was probed, student, held-out set, settings, time
            source VARCHAR NOT NULL,             -- the export folder, file or `snapshot NAME` probed
            snapshot_id VARCHAR,                 -- its snapshot, where known (the card shows its probes)
            run_id VARCHAR,                      -- the run that made most of its rows (the report shows its probes)
            student VARCHAR NOT NULL,            -- the student model folder
            heldout VARCHAR NOT NULL,            -- the held-out file, and a hash of its rows as read
            heldout_hash VARCHAR NOT NULL,
            heldout_rows INTEGER NOT NULL,
            train_rows INTEGER NOT NULL,
            steps INTEGER NOT NULL,
            seed BIGINT NOT NULL,
            settings JSON NOT NULL,              -- batch size, learning rate, LoRA rank, max length, ...
            device VARCHAR NOT NULL,             -- cpu / cuda
            baseline_loss DOUBLE NOT NULL,       -- held-out NLL per answer token, untrained student
            loss DOUBLE NOT NULL,                -- the same after fine-tuning on this set
            baseline_accuracy DOUBLE,            -- greedy answers the verifier accepts (NULL: no verifier)
            accuracy DOUBLE,
            accuracy_rows INTEGER NOT NULL DEFAULT 0,
            first_train_loss DOUBLE,
            last_train_loss DOUBLE,
            train_s DOUBLE NOT NULL,             -- seconds of fine-tuning, and of scoring this set
            eval_s DOUBLE NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""",
    "exports": """
        CREATE TABLE IF NOT EXISTS exports (
            export_id VARCHAR PRIMARY KEY,
            snapshot_id VARCHAR NOT NULL,
            target VARCHAR NOT NULL,             -- parquet / jsonl / save_to_disk / hub
            location VARCHAR NOT NULL,           -- a path or a repo id
            revision VARCHAR,                    -- the Hub commit, when pushed
            n_rows INTEGER NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""",
}

# version -> statements that bring a catalog of the version before it up to it
MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE samples ADD COLUMN IF NOT EXISTS judge_rationale VARCHAR"],
    # rebuilt without its key (a key cannot be dropped in place), with the `segment` column
    3: [
        "DROP TABLE IF EXISTS samples_v3",
        TABLES["samples"].replace("samples (", "samples_v3 (", 1),
        "INSERT INTO samples_v3 BY NAME SELECT * FROM samples",
        "DROP INDEX IF EXISTS samples_run_slot",
        "DROP TABLE samples",
        "ALTER TABLE samples_v3 RENAME TO samples",
        "CREATE INDEX IF NOT EXISTS samples_run_slot ON samples (run_id, slot)",
    ],
    # the dataset becomes the unit: each task's runs become contributions to the dataset named
    # after the task; an import's staging run (recipe kind 'import') contributes nothing itself
    4: [
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS dataset VARCHAR",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS kind VARCHAR DEFAULT 'generate'",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS target INTEGER",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS base_hash VARCHAR",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS pid INTEGER",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS host VARCHAR",
        "UPDATE runs SET kind = CASE WHEN json_extract_string(recipe, '$.kind') = 'import' THEN 'import' ELSE 'generate' END",
        "UPDATE runs SET dataset = name WHERE kind = 'generate' AND dataset IS NULL",
        "UPDATE runs SET target = TRY_CAST(json_extract_string(recipe, '$.generation.target') AS INTEGER) WHERE target IS NULL",
        """INSERT OR IGNORE INTO datasets (dataset, task_name, target, tree_id, created_at, updated_at)
           SELECT dataset, any_value(name), coalesce(max(target), 0), arg_max(tree_id, updated_at),
                  min(started_at), max(updated_at)
           FROM runs WHERE dataset IS NOT NULL GROUP BY dataset""",
        "ALTER TABLE requests ADD COLUMN IF NOT EXISTS sample_id VARCHAR",
        "ALTER TABLE samples ADD COLUMN IF NOT EXISTS seed_key VARCHAR",
        "ALTER TABLE snapshots ADD COLUMN IF NOT EXISTS dataset VARCHAR",
        "ALTER TABLE snapshots ADD COLUMN IF NOT EXISTS version INTEGER",
        "ALTER TABLE snapshot_samples ADD COLUMN IF NOT EXISTS first_version INTEGER",
    ],
    # generation on a Ray cluster: which replica and node answered; chunks given up on
    5: [
        "ALTER TABLE requests ADD COLUMN IF NOT EXISTS worker VARCHAR",
        "ALTER TABLE requests ADD COLUMN IF NOT EXISTS node VARCHAR",
        # created by create_all before the migration runs; kept here so the version says it all
        "CREATE TABLE IF NOT EXISTS failed_chunks (run_id VARCHAR NOT NULL, chunk_id VARCHAR NOT NULL, "
        "attempts JSON NOT NULL, tries INTEGER NOT NULL, workers JSON, error VARCHAR, created_at TIMESTAMP NOT NULL, "
        "PRIMARY KEY (run_id, chunk_id))",
    ],
    # the embedding cache (created by create_all before the migration runs)
    6: [],
    # verifier agreement per sample (majority-vote labels)
    7: [
        "ALTER TABLE samples ADD COLUMN IF NOT EXISTS agreement DOUBLE",
        "ALTER TABLE samples ADD COLUMN IF NOT EXISTS n_solutions INTEGER",
    ],
    # student-probe results (created by create_all before the migration runs)
    8: [],
}

INDEXES = [
    "CREATE INDEX IF NOT EXISTS samples_run_slot ON samples (run_id, slot)",
    "CREATE INDEX IF NOT EXISTS requests_run ON requests (run_id)",
]


def create_all(con) -> None:
    for ddl in TABLES.values():
        con.execute(ddl)
    for ddl in INDEXES:
        con.execute(ddl)
    found = con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    if found is None:
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [SCHEMA_VERSION])
    elif found < SCHEMA_VERSION:
        con.execute("BEGIN TRANSACTION")  # a migration that fails halfway leaves the catalog as it was
        try:
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(version, []):
                    con.execute(statement)
                con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    elif found > SCHEMA_VERSION:
        raise RuntimeError(
            f"this catalog has schema version {found}, newer than this factory's {SCHEMA_VERSION}: upgrade the factory"
        )
