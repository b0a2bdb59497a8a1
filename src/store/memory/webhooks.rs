//! Webhooks in memory: endpoints, the outbox and deliveries, with the same semantics as the SQL
//! store (claims with leases, an attempt recorded only under its claim). Finished messages
//! beyond the store's capacity are forgotten, oldest first.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::domain::{
    Attempt, AttemptOutcome, Delivery, DeliveryState, DueDelivery, Endpoint, EndpointId, MessageId,
    OutboxMessage, Owner,
};
use crate::store::{Backlog, StoreError, WebhookStore};

struct Message {
    message: OutboxMessage,
    payload: Option<String>,
}

struct Slot {
    state: DeliveryState,
    attempts: Vec<Attempt>,
    next_attempt_at: DateTime<Utc>,
    lease: Option<(String, DateTime<Utc>)>,
    created_at: DateTime<Utc>,
}

#[derive(Default)]
pub(super) struct Webhooks {
    endpoints: Vec<Endpoint>,
    /// In the order they were written.
    messages: Vec<Message>,
    deliveries: BTreeMap<(MessageId, EndpointId), Slot>,
}

impl Webhooks {
    /// Whether `owner` has an endpoint (enabled or paused) messages go to.
    pub(super) fn listens(&self, owner: &Owner) -> bool {
        self.endpoints
            .iter()
            .any(|endpoint| &endpoint.owner == owner)
    }

    fn enabled(&self, id: &EndpointId) -> bool {
        self.endpoints.iter().any(|e| &e.id == id && e.enabled)
    }

    pub(super) fn enqueue(&mut self, message: OutboxMessage, capacity: usize) {
        self.messages.push(Message {
            message,
            payload: None,
        });
        self.forget_finished(capacity);
    }

    /// Drops the oldest messages whose every delivery is finished, down to `capacity`.
    fn forget_finished(&mut self, capacity: usize) {
        while self.messages.len() > capacity {
            let finished = self.messages.iter().position(|m| {
                m.payload.is_some()
                    && self
                        .deliveries
                        .iter()
                        .filter(|((id, _), _)| id == &m.message.id)
                        .all(|(_, slot)| slot.state != DeliveryState::Pending)
            });
            let Some(index) = finished else { return };
            let id = self.messages.remove(index).message.id;
            self.deliveries.retain(|(message, _), _| message != &id);
        }
    }

    fn message(&self, id: &MessageId) -> Option<&Message> {
        self.messages.iter().find(|m| &m.message.id == id)
    }
}

#[async_trait]
impl WebhookStore for MemoryStore {
    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        self.webhooks().endpoints.push(endpoint.clone());
        Ok(())
    }

    async fn endpoint(
        &self,
        owner: &Owner,
        id: &EndpointId,
    ) -> Result<Option<Endpoint>, StoreError> {
        Ok(self
            .webhooks()
            .endpoints
            .iter()
            .find(|e| &e.id == id && &e.owner == owner)
            .cloned())
    }

    async fn endpoints(&self, owner: &Owner) -> Result<Vec<Endpoint>, StoreError> {
        Ok(self
            .webhooks()
            .endpoints
            .iter()
            .filter(|e| &e.owner == owner)
            .cloned()
            .collect())
    }

    async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        read_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut webhooks = self.webhooks();
        let Some(stored) = webhooks
            .endpoints
            .iter_mut()
            .find(|e| e.id == endpoint.id && e.owner == endpoint.owner && e.updated_at == read_at)
        else {
            return Ok(false);
        };
        *stored = Endpoint {
            created_at: stored.created_at,
            ..endpoint.clone()
        };
        Ok(true)
    }

    async fn delete_endpoint(&self, owner: &Owner, id: &EndpointId) -> Result<bool, StoreError> {
        let mut webhooks = self.webhooks();
        let before = webhooks.endpoints.len();
        webhooks
            .endpoints
            .retain(|e| !(&e.id == id && &e.owner == owner));
        if webhooks.endpoints.len() == before {
            return Ok(false);
        }
        webhooks
            .deliveries
            .retain(|(_, endpoint), _| endpoint != id);
        Ok(true)
    }

    async fn unrouted(&self, limit: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        Ok(self
            .webhooks()
            .messages
            .iter()
            .filter(|m| m.payload.is_none())
            .take(limit)
            .map(|m| m.message.clone())
            .collect())
    }

    async fn route(
        &self,
        message: &MessageId,
        payload: &str,
        endpoints: &[EndpointId],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut webhooks = self.webhooks();
        let Some(stored) = webhooks
            .messages
            .iter_mut()
            .find(|m| &m.message.id == message && m.payload.is_none())
        else {
            return Ok(());
        };
        stored.payload = Some(payload.to_owned());
        for endpoint in endpoints {
            webhooks
                .deliveries
                .entry((message.clone(), endpoint.clone()))
                .or_insert(Slot {
                    state: DeliveryState::Pending,
                    attempts: Vec::new(),
                    next_attempt_at: now,
                    lease: None,
                    created_at: now,
                });
        }
        Ok(())
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        claim: &str,
        lease_until: DateTime<Utc>,
        skip: &[EndpointId],
        per_endpoint: usize,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let mut webhooks = self.webhooks();
        let enabled: Vec<EndpointId> = webhooks
            .endpoints
            .iter()
            .filter(|e| e.enabled && !skip.contains(&e.id))
            .map(|e| e.id.clone())
            .collect();
        let mut due: Vec<(DateTime<Utc>, (MessageId, EndpointId))> = webhooks
            .deliveries
            .iter()
            .filter(|((_, endpoint), slot)| {
                slot.state == DeliveryState::Pending
                    && slot.next_attempt_at <= now
                    && slot.lease.as_ref().is_none_or(|(_, until)| *until < now)
                    && enabled.contains(endpoint)
            })
            .map(|(key, slot)| (slot.next_attempt_at, key.clone()))
            .collect();
        due.sort();
        let mut ranks: BTreeMap<EndpointId, usize> = BTreeMap::new();
        due.retain(|(_, (_, endpoint))| {
            let rank = ranks.entry(endpoint.clone()).or_default();
            *rank += 1;
            *rank <= per_endpoint
        });
        due.truncate(limit);
        let mut claimed = Vec::with_capacity(due.len());
        for (_, key) in due {
            let slot = webhooks.deliveries.get_mut(&key).expect("just found");
            slot.lease = Some((claim.to_owned(), lease_until));
            let attempts = u32::try_from(slot.attempts.len()).unwrap_or(u32::MAX);
            let message = webhooks
                .message(&key.0)
                .expect("a delivery has its message");
            claimed.push(DueDelivery {
                message_id: key.0.clone(),
                endpoint_id: key.1.clone(),
                owner: message.message.owner.clone(),
                event_type: message.message.event_type.clone(),
                payload: message.payload.clone().unwrap_or_default(),
                attempts,
                created_at: message.message.created_at,
            });
        }
        Ok(claimed)
    }

    async fn endpoint_health(
        &self,
        id: &EndpointId,
        failing: Option<DateTime<Utc>>,
        disable: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut webhooks = self.webhooks();
        if let Some(endpoint) = webhooks.endpoints.iter_mut().find(|e| &e.id == id) {
            endpoint.failing_since = failing.map(|at| endpoint.failing_since.unwrap_or(at));
            if let Some(reason) = disable {
                endpoint.enabled = false;
                endpoint.disabled_reason = Some(reason.to_owned());
            }
            endpoint.updated_at = now;
        }
        Ok(())
    }

    async fn release(&self, due: &DueDelivery, claim: &str) -> Result<(), StoreError> {
        let mut webhooks = self.webhooks();
        let key = (due.message_id.clone(), due.endpoint_id.clone());
        if let Some(slot) = webhooks.deliveries.get_mut(&key)
            && slot.lease.as_ref().is_some_and(|(by, _)| by == claim)
        {
            slot.lease = None;
        }
        Ok(())
    }

    async fn record_attempt(
        &self,
        due: &DueDelivery,
        claim: &str,
        attempt: &Attempt,
        outcome: &AttemptOutcome,
    ) -> Result<bool, StoreError> {
        let mut webhooks = self.webhooks();
        let key = (due.message_id.clone(), due.endpoint_id.clone());
        let Some(slot) = webhooks
            .deliveries
            .get_mut(&key)
            .filter(|slot| slot.lease.as_ref().is_some_and(|(by, _)| by == claim))
        else {
            return Ok(false);
        };
        slot.lease = None;
        slot.attempts.push(attempt.clone());
        match outcome {
            AttemptOutcome::Delivered => slot.state = DeliveryState::Delivered,
            AttemptOutcome::Failed => slot.state = DeliveryState::Failed,
            AttemptOutcome::Retry { next_attempt_at } => {
                slot.state = DeliveryState::Pending;
                slot.next_attempt_at = *next_attempt_at;
            }
        }
        Ok(true)
    }

    async fn deliveries(
        &self,
        endpoint: &EndpointId,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let webhooks = self.webhooks();
        let mut deliveries: Vec<Delivery> = webhooks
            .deliveries
            .iter()
            .filter(|((_, e), _)| e == endpoint)
            .map(|((message, _), slot)| Delivery {
                message_id: message.clone(),
                event_type: webhooks
                    .message(message)
                    .map(|m| m.message.event_type.clone())
                    .unwrap_or_default(),
                state: slot.state,
                created_at: slot.created_at,
                next_attempt_at: (slot.state == DeliveryState::Pending)
                    .then_some(slot.next_attempt_at),
                attempts: slot.attempts.clone(),
            })
            .collect();
        deliveries
            .sort_by(|a, b| (b.created_at, &b.message_id).cmp(&(a.created_at, &a.message_id)));
        deliveries.truncate(limit);
        Ok(deliveries)
    }

    async fn resend(
        &self,
        endpoint: &EndpointId,
        message: &MessageId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut webhooks = self.webhooks();
        let Some(slot) = webhooks
            .deliveries
            .get_mut(&(message.clone(), endpoint.clone()))
        else {
            return Ok(false);
        };
        slot.state = DeliveryState::Pending;
        slot.next_attempt_at = now;
        Ok(true)
    }

    async fn recover(
        &self,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut webhooks = self.webhooks();
        let mut recovered = 0;
        for ((_, e), slot) in &mut webhooks.deliveries {
            if e == endpoint && slot.state == DeliveryState::Failed && slot.created_at >= since {
                slot.state = DeliveryState::Pending;
                slot.next_attempt_at = now;
                recovered += 1;
            }
        }
        Ok(recovered)
    }

    async fn purge_webhooks(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
        let mut webhooks = self.webhooks();
        let done: Vec<MessageId> = webhooks
            .messages
            .iter()
            .filter(|m| m.payload.is_some() && m.message.created_at < before)
            .map(|m| m.message.id.clone())
            .filter(|id| {
                webhooks
                    .deliveries
                    .iter()
                    .all(|((message, endpoint), slot)| {
                        message != id
                            || slot.state != DeliveryState::Pending
                            || !webhooks.enabled(endpoint)
                    })
            })
            .take(limit)
            .collect();
        webhooks.messages.retain(|m| !done.contains(&m.message.id));
        webhooks
            .deliveries
            .retain(|(message, _), _| !done.contains(message));
        Ok(done.len() as u64)
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        let webhooks = self.webhooks();
        let pending = webhooks
            .deliveries
            .iter()
            .filter(|((_, endpoint), slot)| {
                slot.state == DeliveryState::Pending && webhooks.enabled(endpoint)
            })
            .map(|(_, slot)| slot);
        Ok(Backlog {
            unrouted: webhooks
                .messages
                .iter()
                .filter(|m| m.payload.is_none())
                .count() as u64,
            pending: pending.clone().count() as u64,
            oldest_pending: pending.map(|slot| slot.created_at).min(),
        })
    }
}
