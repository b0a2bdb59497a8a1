-- Tenants and API keys. Every session belongs to one tenant in one mode (test or live), and
-- every read filters by both. Sessions stored before keys existed belong to tenant `default`,
-- mode `live`: a key made with `keys create --tenant default --mode live` reads them.
--
-- Additive only, so that instances of the previous version keep working on a shared database
-- during a rolling deploy: `sessions.owner` and the unscoped `idempotency_keys` table stay
-- (unused from here on; a later migration drops them). While both versions run, an
-- `Idempotency-Key` is not shared between an old instance and a new one.

ALTER TABLE sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE sessions ADD COLUMN mode TEXT NOT NULL DEFAULT 'live';
-- Public ids of the keys that created and erased the session (audit); erased_by stays empty
-- when retention erased it.
ALTER TABLE sessions ADD COLUMN created_by TEXT;
ALTER TABLE sessions ADD COLUMN erased_by TEXT;

-- The list, newest first, per tenant and mode (keyset pagination on created_at, id).
CREATE INDEX sessions_owner_created ON sessions (tenant, mode, created_at, id);

-- Idempotency keys are scoped per tenant and mode: the same key from two tenants names two
-- sessions. A new table with the scope in its primary key; keys already taken stay taken.
CREATE TABLE scoped_idempotency_keys (
    tenant      TEXT NOT NULL,
    mode        TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, mode, key)
);
INSERT INTO scoped_idempotency_keys (tenant, mode, key, fingerprint, session_id, created_at, expires_at)
    SELECT 'default', 'live', key, fingerprint, session_id, created_at, expires_at FROM idempotency_keys;
CREATE INDEX scoped_idempotency_keys_expiry ON scoped_idempotency_keys (expires_at);

CREATE TABLE api_keys (
    -- Public id (key_...): what lists, logs and audit records show.
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    mode         TEXT NOT NULL,
    -- `*` (every scope) or scope names separated by spaces.
    scopes       TEXT NOT NULL,
    label        TEXT,
    -- SHA-256 (hex) of the key; the key itself is never stored.
    hash         TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    expires_at   TEXT,
    revoked_at   TEXT,
    -- The key this one replaced by rotation.
    replaces     TEXT
);

CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);
