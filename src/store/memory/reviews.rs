//! Review cases in memory, kept with their sessions (and forgotten with them when the store is
//! over its capacity), with the same compare-and-set as the SQL store.

use async_trait::async_trait;

use super::MemoryStore;
use crate::domain::{
    MessageId, OutboxMessage, Owner, ReviewCase, ReviewDecision, ReviewQuery, ReviewStatus,
    SessionId,
};
use crate::store::{Decided, ReviewBacklog, ReviewStore, ReviewWrite, StoreError};

#[async_trait]
impl ReviewStore for MemoryStore {
    async fn review_decisions(&self, id: SessionId) -> Result<Vec<ReviewDecision>, StoreError> {
        Ok(self
            .lock()
            .sessions
            .get(&id)
            .map(|entry| entry.decisions.clone())
            .unwrap_or_default())
    }

    async fn reviews(
        &self,
        owner: &Owner,
        query: &ReviewQuery,
    ) -> Result<Vec<ReviewCase>, StoreError> {
        let inner = self.lock();
        let mut cases: Vec<ReviewCase> = inner
            .sessions
            .values()
            .filter(|entry| &entry.record.owner == owner)
            .filter_map(|entry| {
                let state = entry.record.review.as_ref()?;
                let wanted = query.statuses.contains(&state.status)
                    && query.after.is_none_or(|p| {
                        (state.opened_at, entry.record.id) > (p.opened_at, p.session_id)
                    });
                wanted.then(|| ReviewCase {
                    session_id: entry.record.id,
                    reference: entry.record.reference.clone(),
                    state: state.clone(),
                    decisions: entry.decisions.clone(),
                })
            })
            .collect();
        cases.sort_by_key(|case| (case.state.opened_at, case.session_id));
        cases.truncate(query.limit);
        Ok(cases)
    }

    async fn decide(
        &self,
        owner: &Owner,
        id: SessionId,
        write: &ReviewWrite,
    ) -> Result<Decided, StoreError> {
        let mut inner = self.lock();
        let Some(entry) = inner
            .sessions
            .get_mut(&id)
            .filter(|entry| &entry.record.owner == owner)
        else {
            return Ok(Decided::Moved);
        };
        if write.decision.note.is_some() && entry.record.erased_at.is_some() {
            return Ok(Decided::Erased);
        }
        let Some(state) = entry
            .record
            .review
            .as_mut()
            .filter(|state| state.last_seq == write.read_seq)
        else {
            return Ok(Decided::Moved);
        };
        state.status = write.status;
        state.last_seq = write.events.last().map_or(write.read_seq, |e| e.seq);
        let last_seq = state.last_seq;
        entry.decisions.push(write.decision.clone());
        entry.events.extend_from_slice(&write.events);
        if let Some(resolution) = &write.resolution {
            state.resolved_at = Some(resolution.resolved_at);
            if let Some(completion) = entry.record.completion.as_mut() {
                completion.decision = resolution.verdict.into();
                completion.reasons = resolution.reasons.clone();
            }
            let mut webhooks = self.webhooks();
            if webhooks.listens(owner) {
                let message = OutboxMessage {
                    id: MessageId::generate(),
                    owner: owner.clone(),
                    event_type: "session.reviewed".to_owned(),
                    session_id: id,
                    seq: last_seq,
                    created_at: resolution.resolved_at,
                };
                webhooks.enqueue(message, self.capacity);
            }
        }
        Ok(Decided::Stored)
    }

    async fn review_backlog(&self) -> Result<ReviewBacklog, StoreError> {
        let inner = self.lock();
        let mut backlog = ReviewBacklog::default();
        for state in inner
            .sessions
            .values()
            .filter_map(|e| e.record.review.as_ref())
        {
            match state.status {
                ReviewStatus::Open => backlog.open += 1,
                ReviewStatus::PendingSecond => backlog.pending_second += 1,
                ReviewStatus::Resolved => continue,
            }
            backlog.oldest = Some(
                backlog
                    .oldest
                    .map_or(state.opened_at, |o| o.min(state.opened_at)),
            );
        }
        Ok(backlog)
    }

    /// Every case here was opened by this store's own completions.
    async fn open_missing_cases(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}
