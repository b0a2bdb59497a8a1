-- One schema for SQLite and PostgreSQL: only types both understand (TEXT, BIGINT, DOUBLE
-- PRECISION). Timestamps are RFC 3339 UTC text with microseconds, fixed width, so they sort and
-- compare as text and read as dates in any SQL console.

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    -- The API key's name once authentication exists.
    owner            TEXT,
    reference        TEXT,
    status           TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    deadline_at      TEXT NOT NULL,
    completed_at     TEXT,
    decision         TEXT,
    -- JSON array of reason codes.
    reasons          TEXT,
    -- JSON object: agent name to its check.
    checks           TEXT,
    duration_ms      DOUBLE PRECISION,
    -- Fingerprint of the agent plan that decided the session.
    plan_version     TEXT NOT NULL,
    -- The instance running the session; recovery takes sessions whose instance went silent.
    instance         TEXT NOT NULL,
    -- How many times the session has been resumed after its instance stopped.
    attempts         BIGINT NOT NULL DEFAULT 0,
    images_erased_at TEXT,
    erased_at        TEXT
);

CREATE INDEX sessions_running ON sessions (status, instance);
CREATE INDEX sessions_created ON sessions (created_at);

-- Append-only: each line is the NDJSON event exactly as clients received it.
CREATE TABLE events (
    session_id TEXT NOT NULL REFERENCES sessions (id),
    seq        BIGINT NOT NULL,
    terminal   BIGINT NOT NULL,
    line       TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- Live instances and when each last said so.
CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);

CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    -- SHA-256 of the request's canonical inputs.
    fingerprint TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
