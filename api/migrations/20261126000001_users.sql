-- Users: guests (identified by the hash of a random token) and members (identified by their
-- provider and the provider's id for them). Expand/contract rule: see api/README.md.
CREATE TABLE users (
    id               BIGSERIAL PRIMARY KEY,
    nickname         TEXT        NOT NULL,
    role             TEXT        NOT NULL CHECK (role IN ('ROLE_GUEST', 'ROLE_USER')),
    guest_token_hash BYTEA       UNIQUE,
    provider         TEXT,
    provider_user_id TEXT,
    email            TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_user_id),
    CONSTRAINT users_identity CHECK (
        (role = 'ROLE_GUEST' AND guest_token_hash IS NOT NULL)
        OR (role = 'ROLE_USER' AND provider_user_id IS NOT NULL)
    )
);

-- Members known only by their subject (tokens of the old server carry no provider claim).
CREATE UNIQUE INDEX users_legacy_subject ON users (provider_user_id) WHERE provider IS NULL;
-- Lookup by subject alone, whatever the provider.
CREATE INDEX users_provider_user_id ON users (provider_user_id) WHERE provider_user_id IS NOT NULL;
