"""The DuckDB schema: the only DDL in kvtool, its version, and migrations between versions.

Tables (one row each):
- ``files``: an ingested input file, identified by the xxh3-128 ``digest`` of its content
  as read (decompressed, CRLF as LF, blank lines left out; re-ingesting it adds nothing).
  ``records`` counts the records its lines held (a line may hold several, e.g. an
  OTLP batch of spans), ``skipped`` those outside the format's scope (a Langfuse SPAN, an OTel
  embeddings span), ``redacted`` that no prompt text of it was stored (``--redact``).
- ``requests``: a normalized request (``line`` and ``item``: where in its file it came from).
  ``cache_write_tokens`` and ``cache_control`` (JSON markers: where a provider was asked to cache)
  are kept as logged; ``truncated`` (the logger cut long strings) and ``incomplete`` (why the
  logged prompt cannot be rebuilt, e.g. a Responses ``previous_response_id``) keep a request
  out of prefix analysis, and every report counts it. ``tenant`` is the cache-isolation domain
  (organization, team, project, API-key hash: block hashes are seeded by it), ``end_user`` the
  end user the log names (kept, never an isolation domain: providers cache per organization),
  ``cache_key`` the routing key the request sent (OpenAI's ``prompt_cache_key``: it picks the
  machine whose cache the request meets, never an isolation domain or a session).
  Messages, tool catalogs and completion prompts are stored once each in ``contents`` and
  referenced by 64-bit content keys, so agent logs that resend the same history every turn take
  space proportional to their distinct content. ``synthetic_id`` is true when the log carried
  no request id and kvtool made one (``<digest[:12]>:<line>``).
- ``contents``: distinct content by key (``kind``: 'message', 'tools' or 'prompt'; ``body``: JSON).
- ``rejects``: an input record that did not become a request, with file, line, item, reason and
  raw text; ``skipped`` rows are records outside the format's scope, not errors.
- ``tokenizations``: what a tokenize pass decided for a tokenizer signature: the tokenizer spec it
  was loaded from, the chat template, the mode ('pieces', 'segments' or 'whole', chosen after
  checking composed ids against one-call ids) and how many requests that check covered. Chains
  of a signature are only ever computed in its stored mode; ``used`` orders signatures by last use.
- ``chains``: per request and tokenizer signature, the prompt length and the hash of its last full
  base-16 block (NULL when it has none).
- ``template_errors``: per tokenizer signature, a chat/completion request the chat template raised
  for, with the template's message (one line). It has no chain: it is left out of the workload,
  reported by every analyze, and not rendered again for that signature.
- ``blocks``: per tokenizer signature, each distinct block once: its chain hash, the hash of the
  block before it (NULL for a first block) and its 0-based position. A request's block chain is
  the path from its last block up through ``parent`` (docs/architecture.md: block identity).
- ``redactions``: a file ingested with ``--redact`` (``files.redacted``): the tokenizer signature
  it was tokenized with at ingest and its *batch* (the files of one redacted ingest). Such a
  file has ``requests``, ``chains``, ``blocks`` and ``template_errors`` rows but no ``contents``
  and no raw ``rejects`` text; what break analysis needs of its text is kept as fingerprints
  (docs/redaction.md), in the ``fp_*`` tables:
- ``fp_requests``: per request and tokenizer, its elements in render order (message and tool
  fingerprints, the completion prompt's text id), its head identity (``head``), how many leading
  system messages it has, where its head and its last message end in tokens, and (one piece per
  element, default template) each piece's token fingerprint and end offset.
- ``fp_messages``: per message fingerprint, its role, content text id and tool calls (name hash,
  argument text id, key-order-insensitive hash of the parsed arguments).
- ``fp_tools``: per tool fingerprint, its name hash and its JSON as a tree of hashes.
- ``fp_texts``: per text id, the hashes a text comparison needs: folded-whitespace hashes, prefix
  hashes at the boundaries of its volatile spans and JSON values, and those spans.
- ``fp_heads``: per batch and distinct head, its rank among the batch's heads sorted as text and
  as reversed text, with the common prefix / suffix length to the next one.
- ``fp_prefixes``: pairs of token pieces (or completion prompts) where one is a prefix of the
  other, found at ingest.
- ``breaks``: per tokenizer signature and block size, a request that diverged from its predecessor
  before the reusable part of it ended: position, cause, field path, tokens lost, diff text.
- ``hash_tree_index``, ``hash_tree_ends``, ``hash_tree_nodes``, ``hash_tree_runs``,
  ``hash_tree_parts``: a hash trace's block tree, built once per file set
  (``kvtool.store.trees``: the key names the files, their digests and block size, and how the
  tree was built): one row per request (its id, last block node and that node's run, in
  processing order, and how many of its leading blocks an earlier request went through: the
  ideal's hits), per node (its parent and depth, in node order, partition after partition),
  per run of the tree's unary stretches (its parent run, first depth and length: what
  ``simulate --sample`` reads instead of the nodes) and per partition (its node count), and an
  index row, written last, with the counts. A cache: created when missing, in a database of any
  version, and rebuilt from ``requests`` whenever absent (the tables of earlier layouts are
  dropped: ``hash_trees``, one row of lists, which took DuckDB 7 times their size in memory;
  ``hash_tree_keys`` and ``hash_tree_requests``, without runs).
- ``sim_runs``: one ``kvtool simulate`` run: its configuration and result as JSON (the ``--json``
  output), the files it read, policy and block size.
- ``replay_runs`` / ``replay_requests``: one ``kvtool replay`` run (endpoint, configuration, the
  ``/metrics`` counter differences) and what each of its requests measured.

Invariant: for every file row, ``records = requests + rejected + skipped`` (``records = lines``
for one-record-per-line formats).
"""

from __future__ import annotations

import duckdb

SCHEMA_VERSION = 4

DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS files (
    file_id INTEGER PRIMARY KEY,
    path VARCHAR NOT NULL,
    digest VARCHAR NOT NULL UNIQUE,
    bytes BIGINT NOT NULL,
    format VARCHAR NOT NULL,
    hash_block_size INTEGER,
    lines BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    ingested_at TIMESTAMP DEFAULT current_timestamp,
    records BIGINT,
    skipped BIGINT NOT NULL DEFAULT 0,
    redacted BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS requests (
    req_id BIGINT NOT NULL,
    file_id INTEGER NOT NULL,
    line BIGINT NOT NULL,
    request_id VARCHAR NOT NULL,
    ts DOUBLE,
    session_id VARCHAR,
    tenant VARCHAR,
    model VARCHAR,
    kind VARCHAR NOT NULL,
    message_keys BIGINT[],
    tools_key BIGINT,
    prompt_key BIGINT,
    hash_ids BIGINT[],
    input_length BIGINT,
    output_tokens BIGINT,
    observed_prompt_tokens BIGINT,
    observed_cached_tokens BIGINT,
    synthetic_id BOOLEAN NOT NULL DEFAULT false,
    item INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT,
    cache_control VARCHAR,
    truncated BOOLEAN NOT NULL DEFAULT false,
    incomplete VARCHAR,
    end_user VARCHAR,
    cache_key VARCHAR
);
CREATE TABLE IF NOT EXISTS contents (
    key BIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    body VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS rejects (
    file_id INTEGER NOT NULL,
    path VARCHAR NOT NULL,
    line BIGINT NOT NULL,
    reason VARCHAR NOT NULL,
    raw VARCHAR,
    item INTEGER NOT NULL DEFAULT 0,
    skipped BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS tokenizations (
    signature VARCHAR PRIMARY KEY,
    spec VARCHAR NOT NULL,
    template VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    verified INTEGER NOT NULL,
    used BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS chains (
    req_id BIGINT NOT NULL,
    tokenizer VARCHAR NOT NULL,
    n_tokens BIGINT NOT NULL,
    last_block BIGINT
);
CREATE TABLE IF NOT EXISTS breaks (
    tokenizer VARCHAR NOT NULL,
    block_size INTEGER NOT NULL,
    req_id BIGINT NOT NULL,
    pred_req_id BIGINT NOT NULL,
    position BIGINT NOT NULL,
    tokens_lost BIGINT NOT NULL,
    cause VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    detail VARCHAR NOT NULL,
    diff VARCHAR NOT NULL
);
DROP TABLE IF EXISTS hash_trees;
DROP TABLE IF EXISTS hash_tree_keys;
DROP TABLE IF EXISTS hash_tree_requests;
CREATE TABLE IF NOT EXISTS hash_tree_index (
    key VARCHAR PRIMARY KEY,
    requests BIGINT NOT NULL,
    nodes BIGINT NOT NULL,
    runs BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS hash_tree_ends (
    key VARCHAR NOT NULL,
    req_id BIGINT NOT NULL,
    end_node BIGINT NOT NULL,
    end_run BIGINT NOT NULL,
    seen BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS hash_tree_nodes (
    key VARCHAR NOT NULL,
    parent BIGINT NOT NULL,
    depth BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS hash_tree_runs (
    key VARCHAR NOT NULL,
    parent BIGINT NOT NULL,
    lo BIGINT NOT NULL,
    length BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS hash_tree_parts (
    key VARCHAR NOT NULL,
    part BIGINT NOT NULL,
    nodes BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_runs (
    run_id INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp,
    file_ids INTEGER[],
    policy VARCHAR NOT NULL,
    block_size INTEGER NOT NULL,
    config VARCHAR NOT NULL,
    result VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS replay_runs (
    run_id INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp,
    endpoint VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    config VARCHAR NOT NULL,
    metrics VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS replay_requests (
    run_id INTEGER NOT NULL,
    req_id BIGINT NOT NULL,
    request_id VARCHAR NOT NULL,
    ok BOOLEAN NOT NULL,
    error VARCHAR,
    started_s DOUBLE,
    ttft_s DOUBLE,
    e2e_s DOUBLE,
    prompt_tokens BIGINT,
    cached_tokens BIGINT
);
CREATE TABLE IF NOT EXISTS template_errors (
    tokenizer VARCHAR NOT NULL,
    req_id BIGINT NOT NULL,
    message VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS blocks (
    tokenizer VARCHAR NOT NULL,
    hash BIGINT NOT NULL,
    parent BIGINT,
    depth INTEGER NOT NULL
);CREATE TABLE IF NOT EXISTS redactions (
    file_id INTEGER NOT NULL,
    tokenizer VARCHAR NOT NULL,
    batch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fp_requests (
    req_id BIGINT NOT NULL,
    tokenizer VARCHAR NOT NULL,
    batch INTEGER NOT NULL,
    head BIGINT NOT NULL,
    n_system INTEGER NOT NULL,
    messages BIGINT[],
    tools BIGINT[],
    prompt BIGINT,
    prompt_ids BOOLEAN NOT NULL DEFAULT false,
    head_end BIGINT NOT NULL,
    end_tokens BIGINT NOT NULL,
    piece_fps BIGINT[],
    piece_ends BIGINT[]
);
CREATE TABLE IF NOT EXISTS fp_messages (
    fp BIGINT NOT NULL,
    role VARCHAR,
    content BIGINT NOT NULL,
    call_names BIGINT[] NOT NULL,
    call_args BIGINT[] NOT NULL,
    call_json BIGINT[] NOT NULL
);
CREATE TABLE IF NOT EXISTS fp_tools (
    fp BIGINT NOT NULL,
    name BIGINT,
    tree VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS fp_texts (
    id BIGINT NOT NULL,
    length BIGINT NOT NULL,
    fold BIGINT NOT NULL,
    fold_plain BIGINT NOT NULL,
    cuts BIGINT[] NOT NULL,
    prefixes BIGINT[] NOT NULL,
    timestamps BIGINT[] NOT NULL,
    ids BIGINT[] NOT NULL,
    json BIGINT[] NOT NULL,
    json_hashes BIGINT[] NOT NULL
);
CREATE TABLE IF NOT EXISTS fp_heads (
    batch INTEGER NOT NULL,
    head BIGINT NOT NULL,
    length BIGINT NOT NULL,
    rank INTEGER NOT NULL,
    lcp_next BIGINT NOT NULL,
    rank_rev INTEGER NOT NULL,
    lcs_next BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS fp_prefixes (
    tokenizer VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    short BIGINT NOT NULL,
    long BIGINT NOT NULL
);
"""

# version 1 -> 2: files.sha256 held an xxh3 digest (renamed ``digest``); synthetic request ids
# become a flag; tokenization decisions are stored. Chains of version 1 were computed in a mode
# nobody recorded, so they (and the blocks and breaks built on them) are dropped and recomputed.
_MIGRATE_1 = """
ALTER TABLE files RENAME COLUMN sha256 TO digest;
ALTER TABLE requests ADD COLUMN synthetic_id BOOLEAN DEFAULT false;
UPDATE requests SET synthetic_id = (request_id = substr(f.digest, 1, 12) || ':' || line)
FROM files f WHERE f.file_id = requests.file_id;
DELETE FROM chains;
DELETE FROM blocks;
DELETE FROM breaks;
DELETE FROM meta WHERE key = 'tokenizer_spec';
"""
# version 2 -> 3: a line may hold several records (``item``), records outside a format's scope are
# kept as skipped rows, and requests keep cache-write tokens, cache-control markers and whether
# the logged prompt is truncated or incomplete. Nothing stored before changes meaning.
_MIGRATE_2 = """
ALTER TABLE files ADD COLUMN records BIGINT;
ALTER TABLE files ADD COLUMN skipped BIGINT DEFAULT 0;
ALTER TABLE files ADD COLUMN redacted BOOLEAN DEFAULT false;
UPDATE files SET records = lines, skipped = 0, redacted = false;
ALTER TABLE requests ADD COLUMN item INTEGER DEFAULT 0;
ALTER TABLE requests ADD COLUMN cache_write_tokens BIGINT;
ALTER TABLE requests ADD COLUMN cache_control VARCHAR;
ALTER TABLE requests ADD COLUMN truncated BOOLEAN DEFAULT false;
ALTER TABLE requests ADD COLUMN incomplete VARCHAR;
ALTER TABLE requests ADD COLUMN end_user VARCHAR;
UPDATE requests SET item = 0, truncated = false;
ALTER TABLE rejects ADD COLUMN item INTEGER DEFAULT 0;
ALTER TABLE rejects ADD COLUMN skipped BOOLEAN DEFAULT false;
UPDATE rejects SET item = 0, skipped = false;
"""
# version 3 -> 4: requests keep the routing key they sent (``cache_key``, OpenAI's
# ``prompt_cache_key``); NULL for requests ingested before. Nothing stored before changes meaning.
_MIGRATE_3 = """
ALTER TABLE requests ADD COLUMN cache_key VARCHAR;
"""
MIGRATIONS = {1: _MIGRATE_1, 2: _MIGRATE_2, 3: _MIGRATE_3}


def current_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The schema version the file records, or None for a file without kvtool tables."""
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
    ).fetchall()[0][0]
    if not has_meta:
        return None
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else None
