-- Liveness challenges: issued by POST /v1/liveness/challenges, answered by one session at most
-- (README, "Liveness challenges"). `steps` is the step names joined by commas. A session takes
-- its challenge by setting `used_by` where it is still empty: of two sessions naming one
-- challenge on any instances, exactly one gets it. Rows are purged once expired: the steps
-- live on in the session's stored inputs and its liveness check.
CREATE TABLE challenges (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    mode       TEXT NOT NULL,
    steps      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_by    TEXT,
    used_at    TEXT
);

CREATE INDEX challenges_expires ON challenges (expires_at);
