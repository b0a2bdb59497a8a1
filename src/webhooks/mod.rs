//! Webhooks on the Standard Webhooks specification: a tenant's endpoints, and every decision
//! delivered to them, signed, at least once, under one `webhook-id` per message.
//!
//! A completion writes its message into the outbox in the same transaction (the store's
//! `complete`), so a message is never lost to a crash: whichever instance runs the
//! [`Dispatcher`] next routes it to the owner's endpoints and sends it. Each attempt is claimed
//! with a lease in the store, so with several instances on one PostgreSQL database one instance
//! at a time attempts a delivery. Failed attempts are retried on `webhooks.retry_schedule`.

mod dispatch;
mod payload;
mod schedule;
mod sign;
mod target;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

use crate::config::WebhookSettings;
use crate::domain::{
    Delivery, EVENT_TYPES, Endpoint, EndpointId, MessageId, Owner, RetiringSecret,
};
use crate::store::{StoreError, WebhookStore};

pub use crate::clock::Clock;
pub use dispatch::Dispatcher;
pub use payload::{CheckSummary, MessageData, SessionCompleted, SessionReviewed, WebhookMessage};
pub use schedule::Schedule;
pub use sign::{new_secret, signature};
pub use target::{GuardedResolver, TargetError, Targets, is_public};

/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 256;
/// Longest URL.
pub const MAX_URL_LEN: usize = 2048;
/// Most of an answer's body read (and then dropped): enough to keep the connection reusable,
/// bounded so an endpoint cannot make the service read without end.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// `webhooks.*`, checked.
#[derive(Debug, Clone)]
pub struct Policy {
    pub schedule: Schedule,
    pub timeout: Duration,
    pub rotation_grace: Duration,
    pub disable_after: Duration,
    pub targets: Targets,
    pub max_in_flight: usize,
    pub max_per_endpoint: usize,
    pub poll_interval: Duration,
    pub max_endpoints: usize,
    /// How long a finished message is kept; `None`: for ever.
    pub keep: Option<Duration>,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("webhooks.{key}: {why}")]
pub struct PolicyError {
    key: &'static str,
    why: String,
}

impl Policy {
    pub fn from_settings(settings: &WebhookSettings) -> Result<Self, PolicyError> {
        // At most ten years: anything longer is a mistake, and times that far ahead leave
        // the range of the stored timestamps.
        const LONGEST: Duration = Duration::from_secs(10 * 366 * 86_400);
        let duration = |key: &'static str, text: &str| {
            let parsed = humantime::parse_duration(text.trim()).map_err(|e| PolicyError {
                key,
                why: format!("`{text}`: {e}"),
            })?;
            if parsed > LONGEST {
                return Err(PolicyError {
                    key,
                    why: format!("`{text}`: at most ten years"),
                });
            }
            Ok(parsed)
        };
        let positive = |key: &'static str, n: usize| {
            if n == 0 {
                Err(PolicyError {
                    key,
                    why: "must be at least 1".to_owned(),
                })
            } else {
                Ok(n)
            }
        };
        let timeout = duration("timeout", &settings.timeout)?;
        if timeout.is_zero() {
            return Err(PolicyError {
                key: "timeout",
                why: "must be more than 0".to_owned(),
            });
        }
        Ok(Self {
            schedule: Schedule::parse(&settings.retry_schedule).map_err(|why| PolicyError {
                key: "retry_schedule",
                why,
            })?,
            timeout,
            rotation_grace: duration("rotation_grace", &settings.rotation_grace)?,
            disable_after: duration("disable_after", &settings.disable_after)?,
            targets: Targets {
                allow_insecure_http: settings.allow_insecure_http,
                allow_private: settings.allow_private_targets,
            },
            max_in_flight: positive("max_in_flight", settings.max_in_flight)?,
            max_per_endpoint: positive("max_per_endpoint", settings.max_per_endpoint)?,
            poll_interval: Duration::from_millis(settings.poll_interval_ms.max(1)),
            max_endpoints: positive("max_endpoints", settings.max_endpoints)?,
            keep: match settings.keep_days {
                0 => None,
                days if days <= 3660 => Some(Duration::from_secs(days * 86_400)),
                _ => {
                    return Err(PolicyError {
                        key: "keep_days",
                        why: "at most 3660 (ten years), or 0 to keep messages for ever".into(),
                    });
                }
            },
        })
    }

    /// How long a claimed delivery stays this instance's: its attempt's time limit and more,
    /// so that only an instance that stopped loses it to another.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(30)
    }
}

/// Why a webhook request cannot be done; the API maps each to a problem.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A field of the request, with a machine-readable code.
    #[error("{field}: {detail}")]
    Invalid {
        field: &'static str,
        code: &'static str,
        detail: String,
    },
    #[error("no such endpoint or message")]
    NotFound,
    /// The endpoint kept changing under a change (another request each time).
    #[error("the endpoint is being changed by other requests; try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WebhookError {
    fn invalid(field: &'static str, code: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            code,
            detail: detail.into(),
        }
    }
}

/// What a new endpoint is made of.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    /// `None`: every message type.
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
}

/// What a change of an endpoint sets; absent fields stay.
#[derive(Debug, Clone, Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// Endpoints and deliveries, as the API manages them. Every call is scoped to one owner.
#[derive(Clone)]
pub struct Webhooks {
    store: Arc<dyn WebhookStore>,
    policy: Arc<Policy>,
    clock: Clock,
}

impl Webhooks {
    pub fn new(store: Arc<dyn WebhookStore>, policy: Arc<Policy>, clock: Clock) -> Self {
        Self {
            store,
            policy,
            clock,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A new endpoint, enabled, with a new secret (returned with it, and shown only now and on
    /// rotation).
    pub async fn create(&self, owner: &Owner, new: NewEndpoint) -> Result<Endpoint, WebhookError> {
        let url = self.check_url(&new.url).await?;
        let events = check_events(new.events)?;
        let description = check_description(new.description)?;
        if self.store.endpoints(owner).await?.len() >= self.policy.max_endpoints {
            return Err(WebhookError::invalid(
                "url",
                "too_many_endpoints",
                format!(
                    "at most {} endpoints per tenant and mode (webhooks.max_endpoints)",
                    self.policy.max_endpoints
                ),
            ));
        }
        let now = self.clock.now();
        let endpoint = Endpoint {
            id: EndpointId::generate(),
            owner: owner.clone(),
            url,
            events,
            description,
            enabled: true,
            disabled_reason: None,
            secret: new_secret(),
            previous_secret: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        self.store.create_endpoint(&endpoint).await?;
        Ok(endpoint)
    }

    pub async fn list(&self, owner: &Owner) -> Result<Vec<Endpoint>, WebhookError> {
        Ok(self.store.endpoints(owner).await?)
    }

    pub async fn get(&self, owner: &Owner, id: &EndpointId) -> Result<Endpoint, WebhookError> {
        self.store
            .endpoint(owner, id)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    /// Applies `change`. Enabling an endpoint clears why it was disabled and its failing
    /// streak, and its pending messages go out again.
    pub async fn update(
        &self,
        owner: &Owner,
        id: &EndpointId,
        change: EndpointChange,
    ) -> Result<Endpoint, WebhookError> {
        let url = match &change.url {
            Some(url) => Some(self.check_url(url).await?),
            None => None,
        };
        let events = change.events.map(|e| check_events(Some(e))).transpose()?;
        let description = change
            .description
            .map(|d| check_description(Some(d)))
            .transpose()?;
        self.change(owner, id, |endpoint, _| {
            if let Some(url) = &url {
                endpoint.url = url.clone();
            }
            if let Some(events) = &events {
                endpoint.events = events.clone();
            }
            if let Some(description) = &description {
                endpoint.description = description.clone();
            }
            if let Some(enabled) = change.enabled {
                if enabled && !endpoint.enabled {
                    endpoint.failing_since = None;
                }
                endpoint.enabled = enabled;
                endpoint.disabled_reason = None;
            }
        })
        .await
    }

    pub async fn delete(&self, owner: &Owner, id: &EndpointId) -> Result<(), WebhookError> {
        if self.store.delete_endpoint(owner, id).await? {
            Ok(())
        } else {
            Err(WebhookError::NotFound)
        }
    }

    /// A new secret; the current one keeps signing beside it for `webhooks.rotation_grace`.
    pub async fn rotate_secret(
        &self,
        owner: &Owner,
        id: &EndpointId,
    ) -> Result<Endpoint, WebhookError> {
        let grace =
            chrono::Duration::from_std(self.policy.rotation_grace).unwrap_or(chrono::Duration::MAX);
        self.change(owner, id, |endpoint, now| {
            endpoint.previous_secret = Some(RetiringSecret {
                secret: std::mem::replace(&mut endpoint.secret, new_secret()),
                until: now
                    .checked_add_signed(grace)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            });
        })
        .await
    }

    pub async fn deliveries(
        &self,
        owner: &Owner,
        id: &EndpointId,
        limit: usize,
    ) -> Result<Vec<Delivery>, WebhookError> {
        let endpoint = self.get(owner, id).await?;
        Ok(self.store.deliveries(&endpoint.id, limit).await?)
    }

    /// Sends a message to the endpoint again, under its same id, as soon as the endpoint is
    /// enabled.
    pub async fn resend(
        &self,
        owner: &Owner,
        id: &EndpointId,
        message: &MessageId,
    ) -> Result<(), WebhookError> {
        let endpoint = self.get(owner, id).await?;
        if self
            .store
            .resend(&endpoint.id, message, self.clock.now())
            .await?
        {
            Ok(())
        } else {
            Err(WebhookError::NotFound)
        }
    }

    /// Sends every message to the endpoint that failed since `since` again; how many.
    pub async fn recover(
        &self,
        owner: &Owner,
        id: &EndpointId,
        since: DateTime<Utc>,
    ) -> Result<u64, WebhookError> {
        let endpoint = self.get(owner, id).await?;
        Ok(self
            .store
            .recover(&endpoint.id, since, self.clock.now())
            .await?)
    }

    /// Reads the endpoint, applies `apply` and stores the result if nothing changed it
    /// meanwhile (another request, or the dispatcher recording its health); otherwise reads it
    /// again and applies `apply` to what is there now.
    async fn change(
        &self,
        owner: &Owner,
        id: &EndpointId,
        apply: impl Fn(&mut Endpoint, DateTime<Utc>),
    ) -> Result<Endpoint, WebhookError> {
        const TRIES: usize = 8;
        for _ in 0..TRIES {
            let mut endpoint = self.get(owner, id).await?;
            let read_at = endpoint.updated_at;
            // Microseconds, as the SQL store keeps them; never equal to `read_at`, which is
            // what tells a later change from this one.
            let now = self
                .clock
                .now()
                .trunc_subsecs(6)
                .max(read_at + chrono::Duration::microseconds(1));
            apply(&mut endpoint, now);
            endpoint.updated_at = now;
            if self.store.update_endpoint(&endpoint, read_at).await? {
                return Ok(endpoint);
            }
        }
        Err(WebhookError::Busy)
    }

    async fn check_url(&self, url: &str) -> Result<String, WebhookError> {
        if url.len() > MAX_URL_LEN {
            return Err(WebhookError::invalid(
                "url",
                "too_long",
                format!("at most {MAX_URL_LEN} characters"),
            ));
        }
        let parsed =
            self.policy
                .targets
                .check_resolved(url)
                .await
                .map_err(|error| match error {
                    TargetError::Malformed(_) | TargetError::Scheme | TargetError::Credentials => {
                        WebhookError::invalid("url", "bad_url", error.to_string())
                    }
                    // One answer for both, so that registering URLs cannot tell a tenant which
                    // names exist on the service's network.
                    TargetError::Unresolved(_) | TargetError::NotPublic { .. } => {
                        WebhookError::invalid(
                            "url",
                            "target_not_allowed",
                            "the host must resolve, and only to public addresses (loopback, \
                         private, link-local, unique-local and metadata addresses are refused)",
                        )
                    }
                })?;
        Ok(parsed.to_string())
    }
}

fn check_events(events: Option<Vec<String>>) -> Result<Vec<String>, WebhookError> {
    let Some(mut events) = events else {
        return Ok(EVENT_TYPES.iter().map(|&t| t.to_owned()).collect());
    };
    if events.is_empty() {
        return Err(WebhookError::invalid(
            "events",
            "empty",
            "at least one message type, or leave `events` out for all of them",
        ));
    }
    if let Some(unknown) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
        return Err(WebhookError::invalid(
            "events",
            "unknown_event_type",
            format!(
                "`{unknown}` is not a message type: {}",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    events.sort();
    events.dedup();
    Ok(events)
}

fn check_description(description: Option<String>) -> Result<String, WebhookError> {
    let description = description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(WebhookError::invalid(
            "description",
            "too_long",
            format!("at most {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    Ok(description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_settings_make_a_policy_and_bad_ones_name_their_key() {
        let defaults = crate::config::Settings::defaults().webhooks;
        let policy = Policy::from_settings(&defaults).unwrap();
        assert_eq!(policy.schedule.attempts(), 10);
        assert_eq!(policy.timeout, Duration::from_secs(15));
        assert_eq!(policy.keep, Some(Duration::from_secs(30 * 86_400)));

        for (change, key) in [
            (
                WebhookSettings {
                    retry_schedule: "0s,later".into(),
                    ..defaults.clone()
                },
                "retry_schedule",
            ),
            (
                WebhookSettings {
                    timeout: "0s".into(),
                    ..defaults.clone()
                },
                "timeout",
            ),
            (
                WebhookSettings {
                    disable_after: "5 fortnights".into(),
                    ..defaults.clone()
                },
                "disable_after",
            ),
            (
                WebhookSettings {
                    max_per_endpoint: 0,
                    ..defaults.clone()
                },
                "max_per_endpoint",
            ),
        ] {
            let error = Policy::from_settings(&change).unwrap_err();
            assert!(
                error.to_string().starts_with(&format!("webhooks.{key}: ")),
                "{error}"
            );
        }
    }
}
