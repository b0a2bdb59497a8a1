-- Manual review. A session its agents decide `review` opens a case here, in the same
-- transaction as its completion; reviewers' decisions are appended to review_decisions and to
-- the session's events. Additive only, like 0002 and 0003.

CREATE TABLE reviews (
    session_id        TEXT PRIMARY KEY REFERENCES sessions (id),
    tenant            TEXT NOT NULL,
    mode              TEXT NOT NULL,
    -- open, pending_second (four-eyes: one decision made) or resolved.
    status            TEXT NOT NULL,
    opened_at         TEXT NOT NULL,
    resolved_at       TEXT,
    -- JSON array: the agents' reasons. Once the case resolves, sessions.decision and
    -- sessions.reasons are the reviewers'; the automated decision of a case is always review.
    automated_reasons TEXT NOT NULL,
    -- The seq of the case's review.opened event (0 for cases opened by this migration).
    opened_seq        BIGINT NOT NULL,
    -- The seq of the case's latest event: a decision is stored only if it is still the one
    -- the reviewer's request read (compare-and-set), so two decisions at once never both land.
    last_seq          BIGINT NOT NULL
);

-- The queue: a tenant's cases in one status, oldest first (keyset pagination on opened_at, id);
-- and the default queue, every case waiting for a decision, from a partial index that holds
-- those alone (queries repeat its predicate word for word, as both databases need to use it).
CREATE INDEX reviews_queue ON reviews (tenant, mode, status, opened_at, session_id);
CREATE INDEX reviews_waiting ON reviews (tenant, mode, opened_at, session_id)
    WHERE status <> 'resolved';
-- The metrics: unresolved cases across tenants.
CREATE INDEX reviews_unresolved ON reviews (status, opened_at) WHERE status <> 'resolved';
-- Sessions decided review and not resolved yet (a resolution changes the decision): what the
-- service looks through for sessions an instance of an earlier version completed without a case.
CREATE INDEX sessions_in_review ON sessions (created_at) WHERE decision = 'review';

-- Append-only: the service never updates or deletes a decision, except that an erasure of the
-- session clears its note.
CREATE TABLE review_decisions (
    session_id     TEXT NOT NULL REFERENCES reviews (session_id),
    -- The seq of the decision's review.decided event.
    seq            BIGINT NOT NULL,
    -- The public id and label of the key that decided.
    reviewer       TEXT NOT NULL,
    reviewer_label TEXT,
    decided_at     TEXT NOT NULL,
    decision       TEXT NOT NULL,
    -- JSON array of reason codes.
    reasons        TEXT NOT NULL,
    note           TEXT,
    PRIMARY KEY (session_id, seq)
);

-- Sessions decided review before this migration get their case, open, without a
-- review.opened event (their history predates reviews).
INSERT INTO reviews (session_id, tenant, mode, status, opened_at, automated_reasons, opened_seq, last_seq)
    SELECT s.id, s.tenant, s.mode, 'open', s.completed_at, COALESCE(s.reasons, '[]'), 0,
        COALESCE((SELECT MAX(e.seq) FROM events e WHERE e.session_id = s.id), 0)
    FROM sessions s
    WHERE s.status = 'completed' AND s.decision = 'review' AND s.completed_at IS NOT NULL;
