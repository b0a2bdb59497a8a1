-- Capture links: made by POST /v1/capture-links, opened by an applicant's page, and used by the one
-- session that page starts (README, "Hosted capture"). Only the token's SHA-256 is kept. A link
-- is used by setting `used_by` where it is still empty, so of two pages submitting at once on
-- any instances exactly one starts a session. `reference` and `claimed` (JSON) are the
-- integrator's data about the applicant: they are copied into the session's inputs when it
-- starts, and the row is purged a day after the link expires.
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
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    used_by       TEXT,
    used_at       TEXT
);

CREATE INDEX capture_links_expires ON capture_links (expires_at);
