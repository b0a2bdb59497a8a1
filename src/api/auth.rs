//! The key a route needs: `Authorized<SessionsRead>` in a handler's arguments authenticates the
//! request, checks the scope and the key's rate limit, and names the key in the request's span
//! (its public id and tenant, so every log line of the request says who asked).

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::auth::{AuthError, Caller};
use crate::domain::Scope;

/// A scope a route needs, as a type.
pub trait Needs {
    const SCOPE: Scope;
}

macro_rules! scopes {
    ($($name:ident => $scope:ident),* $(,)?) => {$(
        #[doc = concat!("Needs `", stringify!($scope), "`.")]
        pub struct $name;
        impl Needs for $name {
            const SCOPE: Scope = Scope::$scope;
        }
    )*};
}

scopes! {
    SessionsWrite => SessionsWrite,
    SessionsRead => SessionsRead,
    SessionsErase => SessionsErase,
    WebhooksManage => WebhooksManage,
    ReviewsWrite => ReviewsWrite,
}

/// A caller allowed the scope `S`.
pub struct Authorized<S>(pub Caller, pub PhantomData<S>);

impl<S: Needs + Send> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes());
        match state.auth.authorize(header, S::SCOPE).await {
            Ok(caller) => {
                let span = tracing::Span::current();
                span.record("key_id", caller.key.id.as_str());
                span.record("tenant", caller.key.owner.tenant.as_str());
                Ok(Self(caller, PhantomData))
            }
            Err(error) => {
                metrics::counter!("kyc_auth_refused_total", "reason" => error.reason())
                    .increment(1);
                Err(refusal(error))
            }
        }
    }
}

/// The answer to a refused key. The log line names the key's public id where there is one,
/// never what the client sent.
fn refusal(error: AuthError) -> ApiError {
    match error {
        AuthError::Forbidden { key, scope } => {
            tracing::warn!(key_id = %key, scope = %scope, "key lacks the route's scope");
            ApiError::Forbidden(scope)
        }
        AuthError::RateLimited { key, retry_after } => {
            tracing::warn!(key_id = %key, "key over its rate limit");
            ApiError::RateLimited {
                retry_after_s: retry_after.as_secs_f64().ceil().max(1.0) as u64,
            }
        }
        AuthError::Store(error) => {
            ApiError::from(crate::orchestrator::OrchestratorError::from(error))
        }
        other => {
            match &other {
                AuthError::Revoked(key) | AuthError::Expired(key) => {
                    tracing::warn!(key_id = %key, reason = other.reason(), "API key refused");
                }
                _ => tracing::warn!(reason = other.reason(), "API key refused"),
            }
            ApiError::Unauthorized(other.reason())
        }
    }
}
