-- Capture links: made by POST /v1/capture-links, opened by an applicant's page, and used by the one
-- session that page starts (README, "Hosted capture"). Only the token's SHA-256 is kept.
-- `used_by` records that session (the link's id is also its idempotency key, which is what holds
-- two pages submitting at once to one session). `reference` and `claimed` (JSON) are the
-- integrator's data about the applicant: copied into the session's inputs when it starts, and
-- cleared from here then; the row is purged a day after the link expires. `challenge_id` is the
-- one liveness challenge the link's page may answer.
CREATE TABLE capture_links (
    id            TEXT PRIMARY KEY,
    token_hash    TEXT NOT NULL UNIQUE,
    tenant        TEXT NOT NULL,
    mode          TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    reference     TEXT,
    document_type TEXT NOT NULL,
    claimed       TEXT,
    redirect_url  TEXT,
    challenge_id  TEXT,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    used_by       TEXT,
    used_at       TEXT
);

CREATE INDEX capture_links_expires ON capture_links (expires_at);
