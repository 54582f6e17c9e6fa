-- The analysis pipeline (api/src/analysis): a fencing token on every claim, a record of every
-- attempt, and the colour whose pods claim work.
--
-- Expand only: the previous release neither reads nor writes any of this, and a node it creates
-- is PENDING with no token, which is what the pipeline expects of a new node.

-- Every claim takes a new token from this sequence; completion, failure, renewal and return are
-- fenced on it, so a worker whose claim expired and was taken again can never write the node.
CREATE SEQUENCE analysis_claim_token AS BIGINT;
ALTER TABLE nodes ADD COLUMN claim_token BIGINT;

-- One row per claim: who took it (pod, colour, token), what the node's parent was when it was
-- taken (status, and the topic sent to the AI server), and how it ended. Operators read it to
-- debug a node; the tests read the pipeline's invariants from it.
CREATE TABLE analysis_attempts (
    id            BIGSERIAL   PRIMARY KEY,
    node_id       BIGINT      NOT NULL REFERENCES nodes (id),
    owner         TEXT        NOT NULL,
    color         TEXT        NOT NULL,
    token         BIGINT      NOT NULL UNIQUE,
    -- The parent's status and topic as the claiming statement read them; NULL for a root.
    parent_status TEXT,
    parent_topic  TEXT,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    finished_at   TIMESTAMPTZ,
    -- COMPLETED, FAILED: the node ended with this attempt. RETURNED: handed back to PENDING (drain,
    -- colour change, AI server down). LOST: the claim was gone when the worker came to store.
    -- RECOVERED: `mutr-api recover` returned it for its (gone) owner. NULL while running.
    outcome       TEXT CHECK (outcome IN ('COMPLETED', 'FAILED', 'RETURNED', 'LOST', 'RECOVERED')),
    -- AI calls made under this claim, and the milliseconds spent waiting for them (backoff
    -- excluded): what the analysis itself cost, beside what the pipeline added.
    tries         INTEGER     NOT NULL DEFAULT 0,
    ai_ms         DOUBLE PRECISION NOT NULL DEFAULT 0,
    error         TEXT,
    CHECK ((outcome IS NULL) = (finished_at IS NULL))
);
CREATE INDEX analysis_attempts_node_id ON analysis_attempts (node_id);

-- The colour whose pods claim analysis work (`mutr-api activate --color C`). No row: every pod
-- claims (one colour, `make run`). Changes are announced on the channel `mutr_active_color`.
CREATE TABLE analysis_active_color (
    singleton  BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    color      TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
