-- Webhooks: endpoints per tenant and mode, an outbox of messages written in the same
-- transaction as the session completion they report, one delivery row per message and
-- endpoint (claimed with a lease, so one instance at a time attempts it), and every attempt.
-- Additive only, like 0002.

CREATE TABLE webhook_endpoints (
    -- Public id (we_...).
    id                  TEXT PRIMARY KEY,
    tenant              TEXT NOT NULL,
    mode                TEXT NOT NULL,
    url                 TEXT NOT NULL,
    -- Message types, separated by spaces.
    events              TEXT NOT NULL,
    description         TEXT NOT NULL,
    enabled             INTEGER NOT NULL,
    disabled_reason     TEXT,
    -- whsec_...: HMAC needs the secret itself, so it is kept as it is (like a database
    -- password in a config file); protect the database accordingly.
    secret              TEXT NOT NULL,
    previous_secret     TEXT,
    previous_until      TEXT,
    failing_since       TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (tenant, mode, created_at);

-- The outbox. `routed_at` is set once the message's deliveries exist; until then any instance
-- may route it (routing twice creates nothing twice: deliveries are keyed by message and
-- endpoint). The body is made when it is routed and kept, so every attempt sends the same bytes.
CREATE TABLE webhook_messages (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    mode        TEXT NOT NULL,
    type        TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    created_at  TEXT NOT NULL,
    payload     TEXT,
    routed_at   TEXT
);
CREATE INDEX webhook_messages_unrouted ON webhook_messages (routed_at, created_at);
-- The purge of messages past webhooks.keep_days.
CREATE INDEX webhook_messages_created ON webhook_messages (created_at);

CREATE TABLE webhook_deliveries (
    message_id      TEXT NOT NULL,
    endpoint_id     TEXT NOT NULL,
    -- pending, delivered or failed.
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    -- The claim of the instance attempting it, until when.
    lease_until     TEXT,
    leased_by       TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (message_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);
-- A claim reads back what it took by its token.
CREATE INDEX webhook_deliveries_claim ON webhook_deliveries (leased_by);

CREATE TABLE webhook_attempts (
    message_id   TEXT NOT NULL,
    endpoint_id  TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    at           TEXT NOT NULL,
    status_code  INTEGER,
    latency_ms   DOUBLE PRECISION NOT NULL,
    error        TEXT,
    PRIMARY KEY (message_id, endpoint_id, attempt)
);
