-- Nodes: short texts that grow as trees, with the analysis results and the pipeline's claim
-- bookkeeping. Expand/contract rule: see api/README.md.
CREATE TABLE nodes (
    id               BIGSERIAL PRIMARY KEY,
    content          TEXT             NOT NULL CHECK (char_length(content) BETWEEN 1 AND 5000),
    author_id        BIGINT           NOT NULL REFERENCES users (id),
    parent_id        BIGINT           REFERENCES nodes (id),
    -- A root's root_id is its own id.
    root_id          BIGINT           NOT NULL REFERENCES nodes (id),
    topic            TEXT,
    emotion          TEXT             NOT NULL DEFAULT 'neutral',
    confidence       REAL,
    mutation_score   DOUBLE PRECISION,
    mutation_filter  TEXT CHECK (mutation_filter IN ('ORIGIN', 'CLUSTER', 'EVOLUTION', 'MUTATION')),
    x                DOUBLE PRECISION NOT NULL,
    y                DOUBLE PRECISION NOT NULL,
    z                DOUBLE PRECISION NOT NULL,
    analysis_status  TEXT             NOT NULL DEFAULT 'PENDING'
        CHECK (analysis_status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED')),
    -- Pipeline bookkeeping: who holds the claim (pod and colour), until when, how often it was
    -- tried and why it last failed.
    claim_owner      TEXT,
    claim_color      TEXT,
    lease_expires_at TIMESTAMPTZ,
    attempts         INTEGER          NOT NULL DEFAULT 0,
    last_error       TEXT,
    metadata         JSONB            NOT NULL DEFAULT '{}'::jsonb,
    created_at       TIMESTAMPTZ      NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ      NOT NULL DEFAULT now(),
    CHECK (parent_id IS NOT NULL OR root_id = id)
);

-- /viz: a 2-D GiST index over (x, y) narrows the cube; z is filtered on the few rows left.
-- Built-in types only, so no extension is needed (Cloud SQL or a bare Debian PostgreSQL).
CREATE INDEX nodes_xy ON nodes USING gist (point(x, y));
-- Children of a node (the pipeline releases waiting children; lineage walks use the primary key).
CREATE INDEX nodes_parent_id ON nodes (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX nodes_root_id ON nodes (root_id);
CREATE INDEX nodes_author_id ON nodes (author_id);
-- Recovery: unfinished nodes, oldest first, and the claims of one colour.
CREATE INDEX nodes_unfinished ON nodes (id) WHERE analysis_status IN ('PENDING', 'PROCESSING');
CREATE INDEX nodes_claim_color ON nodes (claim_color) WHERE analysis_status = 'PROCESSING';
