//! From an `Authorization` header to a caller: who it is, which data it may see, what it may do.
//!
//! Key records are cached for `auth.cache_ttl_s` (at most 60 s), so a request costs a SHA-256
//! and a map lookup rather than a query. That is also how long a revocation or rotation made
//! elsewhere (the `keys` commands, another instance) may take to reach this instance: the
//! promise is "within 60 s on every instance sharing the database". A record is read again by
//! one request while the others keep using it for at most [`REFRESH_PATIENCE`]; a refresh
//! abandoned halfway (its request dropped) is taken over after that.
//!
//! A key the store does not know is remembered as unknown for the same time, so a client
//! repeating a wrong key costs no query per request. That never delays a new key: nobody can
//! have presented it before it was made. Distinct random keys still cost a query each: limit
//! unauthenticated floods in front of the service (load balancer, WAF), where client addresses
//! are known.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::limiter::RateLimiter;
use super::secret::ApiKey;
use crate::domain::{KeyHash, KeyId, KeyRecord, Principal, Scope, Scopes, TenantId};
use crate::store::{KeyStore, StoreError};
use crate::telemetry::ErrorChain;

/// The longest a cached key record is used: the bound on how late a revocation takes effect.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(60);

/// How often a key's `last_used_at` is written, at most, by one instance.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// How long other requests keep using an expired record while one request reads it again.
pub const REFRESH_PATIENCE: Duration = Duration::from_secs(2);

/// Cache entries at most; past it, the unknown keys are forgotten.
const MAX_ENTRIES: usize = 10_000;

/// Why a request is refused. None of these carries the presented key.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no API key: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("the Authorization header is not `Bearer <key>` with a well-formed key")]
    Malformed,
    #[error("unknown API key")]
    Unknown,
    #[error("API key {0} is revoked")]
    Revoked(KeyId),
    #[error("API key {0} has expired")]
    Expired(KeyId),
    #[error("API key {key} lacks the scope `{scope}`")]
    Forbidden { key: KeyId, scope: Scope },
    #[error("API key {key} is over its rate limit")]
    RateLimited { key: KeyId, retry_after: Duration },
    #[error("cannot read API keys")]
    Store(#[from] StoreError),
}

impl AuthError {
    /// A short, stable name for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Revoked(_) => "revoked",
            Self::Expired(_) => "expired",
            Self::Forbidden { .. } => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::Store(_) => "store",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: Arc<KeyRecord>,
}

impl Caller {
    /// Whose data it acts on, and with which key.
    pub fn principal(&self) -> Principal {
        Principal {
            owner: self.key.owner.clone(),
            key_id: self.key.id.clone(),
        }
    }
}

enum Entry {
    Known(Cached),
    /// The store had no key with this hash, as of then.
    Unknown(Instant),
}

struct Cached {
    key: Arc<KeyRecord>,
    fetched: Instant,
    /// When a request began reading the record again; meanwhile the others use this one.
    refresh_started: Option<Instant>,
    /// When this instance last wrote the key's `last_used_at`.
    use_recorded: Option<Instant>,
}

/// Checks keys, scopes and rate limits.
pub struct Authenticator {
    keys: Arc<dyn KeyStore>,
    ttl: Duration,
    // A std Mutex: lookups and inserts only, never held across an await.
    cache: Mutex<HashMap<KeyHash, Entry>>,
    /// A key from configuration (`auth.bootstrap_key`), never stored.
    bootstrap: Option<Arc<KeyRecord>>,
    limiter: RateLimiter,
}

/// Why the bootstrap key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("auth.bootstrap_key is not an API key (kyc_test_...)")]
    Malformed,
    /// A key nobody can revoke must not reach live data.
    #[error("auth.bootstrap_key must be a test key (kyc_test_...): live keys are stored ones")]
    Live,
    #[error("auth.bootstrap_tenant is not a tenant name")]
    Tenant(#[source] crate::domain::TenantError),
}

impl Authenticator {
    /// `cache_ttl` above [`MAX_CACHE_TTL`] is lowered to it. `bootstrap` is a key and the tenant
    /// it acts for, granted every scope.
    pub fn new(
        keys: Arc<dyn KeyStore>,
        cache_ttl: Duration,
        rate_limit_per_minute: u32,
        bootstrap: Option<(&str, &str)>,
    ) -> Result<Self, BootstrapError> {
        let bootstrap = bootstrap
            .map(|(key, tenant)| {
                let key = ApiKey::parse(key).map_err(|_| BootstrapError::Malformed)?;
                if key.mode() != crate::domain::Mode::Test {
                    return Err(BootstrapError::Live);
                }
                let tenant: TenantId = tenant.parse().map_err(BootstrapError::Tenant)?;
                Ok::<_, BootstrapError>(Arc::new(bootstrap_record(&key, tenant)))
            })
            .transpose()?;
        Ok(Self {
            keys,
            ttl: cache_ttl.min(MAX_CACHE_TTL),
            cache: Mutex::default(),
            bootstrap,
            limiter: RateLimiter::new(rate_limit_per_minute),
        })
    }

    /// The caller that `authorization` (the header's value) proves, if it may use `scope` and
    /// is within its rate limit.
    pub async fn authorize(
        &self,
        authorization: Option<&[u8]>,
        scope: Scope,
    ) -> Result<Caller, AuthError> {
        let caller = self.authenticate(authorization).await?;
        if !caller.key.scopes.allows(scope) {
            return Err(AuthError::Forbidden {
                key: caller.key.id.clone(),
                scope,
            });
        }
        self.limiter
            .check(&caller.key.id)
            .map_err(|retry_after| AuthError::RateLimited {
                key: caller.key.id.clone(),
                retry_after,
            })?;
        Ok(caller)
    }

    /// The caller that `authorization` proves, whatever it may do.
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, AuthError> {
        let key = bearer(authorization.ok_or(AuthError::Missing)?)?;
        let hash = key.hash();
        let record = match &self.bootstrap {
            Some(bootstrap) if bool::from(bootstrap.hash.0.ct_eq(&hash.0)) => bootstrap.clone(),
            _ => self.record(hash).await?.ok_or(AuthError::Unknown)?,
        };
        // The store found the record by this hash; comparing again in constant time keeps a
        // timing difference out of any lookup path (a cache's map, a database index).
        if !bool::from(record.hash.0.ct_eq(&hash.0)) || record.owner.mode != key.mode() {
            return Err(AuthError::Unknown);
        }
        let now = Utc::now();
        // Revoked is revoked, whatever the clock of the machine that revoked it said.
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked(record.id.clone()));
        }
        if record.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::Expired(record.id.clone()));
        }
        self.note_use(&record);
        Ok(Caller { key: record })
    }

    /// Whether the key `id` may still act: the configured bootstrap key, or a stored key neither
    /// revoked nor expired. What a key made on its own (a capture link) lasts only as long as
    /// this holds. Read from the store each time: a revocation counts at once.
    pub async fn may_act(&self, id: &KeyId) -> Result<bool, StoreError> {
        if self.is_bootstrap(id) {
            return Ok(true);
        }
        Ok(self
            .keys
            .key(id)
            .await?
            .is_some_and(|key| key.usable_at(Utc::now())))
    }

    /// Whether `id` is the configured bootstrap key's, which no store holds.
    fn is_bootstrap(&self, id: &KeyId) -> bool {
        self.bootstrap.as_ref().is_some_and(|b| &b.id == id)
    }

    /// The record for `hash`: cached, or read (and cached) when the cache has none or an old one.
    async fn record(&self, hash: KeyHash) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let now = Instant::now();
        {
            let mut cache = self.lock();
            match cache.get_mut(&hash) {
                Some(Entry::Unknown(at)) if now.duration_since(*at) < self.ttl => {
                    return Ok(None);
                }
                Some(Entry::Known(cached)) => {
                    let age = now.duration_since(cached.fetched);
                    let refreshing = cached
                        .refresh_started
                        .is_some_and(|at| now.duration_since(at) < REFRESH_PATIENCE);
                    if age < self.ttl || (refreshing && age < MAX_CACHE_TTL) {
                        return Ok(Some(cached.key.clone()));
                    }
                    cached.refresh_started = Some(now);
                }
                _ => {}
            }
        }
        let read = self.keys.key_by_hash(&hash).await;
        let mut cache = self.lock();
        match read {
            Ok(Some(record)) => {
                let key = Arc::new(record);
                let use_recorded = match cache.get(&hash) {
                    Some(Entry::Known(cached)) => cached.use_recorded,
                    _ => None,
                };
                let entry = Entry::Known(Cached {
                    key: key.clone(),
                    fetched: Instant::now(),
                    refresh_started: None,
                    use_recorded,
                });
                remember(&mut cache, hash, entry);
                Ok(Some(key))
            }
            Ok(None) => {
                remember(&mut cache, hash, Entry::Unknown(Instant::now()));
                Ok(None)
            }
            Err(error) => {
                if let Some(Entry::Known(cached)) = cache.get_mut(&hash) {
                    cached.refresh_started = None;
                }
                Err(error)
            }
        }
    }

    /// Writes the key's `last_used_at` in the background, at most once a minute.
    fn note_use(&self, key: &KeyRecord) {
        if self.is_bootstrap(&key.id) {
            return;
        }
        let now = Instant::now();
        {
            let mut cache = self.lock();
            let Some(Entry::Known(cached)) = cache.get_mut(&key.hash) else {
                return;
            };
            if cached
                .use_recorded
                .is_some_and(|at| now.duration_since(at) < LAST_USED_EVERY)
            {
                return;
            }
            cached.use_recorded = Some(now);
        }
        let keys = self.keys.clone();
        let id = key.id.clone();
        tokio::spawn(async move {
            if let Err(error) = keys.key_used(&id, Utc::now()).await {
                tracing::warn!(key_id = %id, error = %ErrorChain(&error), "cannot record a key's use");
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyHash, Entry>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Puts `entry` in the cache; a full cache first forgets its unknown keys (a flood of random
/// keys must not grow it without bound).
fn remember(cache: &mut HashMap<KeyHash, Entry>, hash: KeyHash, entry: Entry) {
    if cache.len() >= MAX_ENTRIES {
        cache.retain(|_, entry| matches!(entry, Entry::Known(_)));
    }
    cache.insert(hash, entry);
}

/// The key in `Bearer <key>` (the scheme's case does not matter, RFC 9110).
fn bearer(header: &[u8]) -> Result<ApiKey, AuthError> {
    let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
    let (scheme, key) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    ApiKey::parse(key.trim()).map_err(|_| AuthError::Malformed)
}

/// The record of the bootstrap key: every scope, an id derived from its hash (so a changed key
/// shows a changed id in the audit trail, and the id gives nothing away about the key).
fn bootstrap_record(key: &ApiKey, tenant: TenantId) -> KeyRecord {
    use sha2::{Digest, Sha256};
    let hash = key.hash();
    let tag: String = Sha256::digest(hash.0)[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    KeyRecord {
        id: format!("{}boot_{tag}", KeyId::PREFIX)
            .parse()
            .expect("a well-formed id"),
        owner: crate::domain::Owner {
            tenant,
            mode: key.mode(),
        },
        scopes: Scopes::All,
        label: Some("auth.bootstrap_key".to_owned()),
        hash,
        created_at: Utc::now(),
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
        replaces: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{KeyManager, NewKey};
    use crate::domain::Mode;
    use crate::store::MemoryStore;

    /// The memory store, counting its key reads, and hanging them while `hang` is set.
    struct WatchedStore {
        inner: MemoryStore,
        reads: std::sync::atomic::AtomicUsize,
        hang: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl KeyStore for WatchedStore {
        async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
            self.inner.create_key(key).await
        }
        async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
            use std::sync::atomic::Ordering::SeqCst;
            self.reads.fetch_add(1, SeqCst);
            if self.hang.load(SeqCst) {
                std::future::pending::<()>().await;
            }
            self.inner.key_by_hash(hash).await
        }
        async fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
            self.inner.key(id).await
        }
        async fn keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, StoreError> {
            self.inner.keys(tenant).await
        }
        async fn revoke_key(
            &self,
            id: &KeyId,
            now: chrono::DateTime<Utc>,
        ) -> Result<bool, StoreError> {
            self.inner.revoke_key(id, now).await
        }
        async fn rotate_key(
            &self,
            old: &KeyId,
            old_expires_at: chrono::DateTime<Utc>,
            new: &KeyRecord,
        ) -> Result<bool, StoreError> {
            self.inner.rotate_key(old, old_expires_at, new).await
        }
        async fn key_used(&self, id: &KeyId, at: chrono::DateTime<Utc>) -> Result<(), StoreError> {
            self.inner.key_used(id, at).await
        }
    }

    impl Default for WatchedStore {
        fn default() -> Self {
            Self {
                inner: MemoryStore::new(10),
                reads: Default::default(),
                hang: Default::default(),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_abandoned_halfway_is_taken_over_so_a_revocation_still_arrives() {
        use std::sync::atomic::Ordering::SeqCst;
        let store = Arc::new(WatchedStore::default());
        let auth = Authenticator::new(store.clone(), Duration::from_secs(30), 0, None).unwrap();
        let manager = KeyManager::new(store.clone());
        let (key, record) = manager
            .create(NewKey::new("acme".parse().unwrap(), Mode::Test))
            .await
            .unwrap();
        assert!(auth.authenticate(Some(&header(&key))).await.is_ok());
        manager.revoke(&record.id).await.unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;

        store.hang.store(true, SeqCst);
        let abandoned = tokio::time::timeout(
            Duration::from_millis(100),
            auth.authenticate(Some(&header(&key))),
        )
        .await;
        assert!(
            abandoned.is_err(),
            "the refresh hung and its request was dropped"
        );
        store.hang.store(false, SeqCst);
        let meanwhile = auth.authenticate(Some(&header(&key))).await;
        tokio::time::advance(REFRESH_PATIENCE).await;
        let after = auth.authenticate(Some(&header(&key))).await;

        assert!(
            meanwhile.is_ok(),
            "others use the record while one refreshes"
        );
        assert!(matches!(after, Err(AuthError::Revoked(_))), "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeated_unknown_key_costs_one_query_per_cache_lifetime() {
        use std::sync::atomic::Ordering::SeqCst;
        let store = Arc::new(WatchedStore::default());
        let auth = Authenticator::new(store.clone(), Duration::from_secs(30), 0, None).unwrap();
        let wrong = ApiKey::generate(Mode::Test);

        for _ in 0..100 {
            let refused = auth.authenticate(Some(&header(&wrong))).await;
            assert!(matches!(refused, Err(AuthError::Unknown)), "{refused:?}");
        }
        assert_eq!(store.reads.load(SeqCst), 1);
        tokio::time::advance(Duration::from_secs(30)).await;
        let _ = auth.authenticate(Some(&header(&wrong))).await;
        assert_eq!(store.reads.load(SeqCst), 2);

        let (new, _) = KeyManager::new(store.clone())
            .create(NewKey::new("acme".parse().unwrap(), Mode::Test))
            .await
            .unwrap();
        assert!(
            auth.authenticate(Some(&header(&new))).await.is_ok(),
            "a new key works at once"
        );
    }

    fn header(key: &ApiKey) -> Vec<u8> {
        format!("Bearer {}", key.expose()).into_bytes()
    }

    async fn setup(ttl: Duration) -> (Authenticator, KeyManager) {
        let store = Arc::new(MemoryStore::new(10));
        let auth = Authenticator::new(store.clone(), ttl, 0, None).unwrap();
        (auth, KeyManager::new(store))
    }

    #[tokio::test(start_paused = true)]
    async fn a_revocation_reaches_a_cached_key_within_the_cache_lifetime() {
        let (auth, manager) = setup(Duration::from_secs(30)).await;
        let (key, record) = manager
            .create(NewKey::new("acme".parse().unwrap(), Mode::Test))
            .await
            .unwrap();
        assert!(auth.authenticate(Some(&header(&key))).await.is_ok());

        manager.revoke(&record.id).await.unwrap();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(
            auth.authenticate(Some(&header(&key))).await.is_ok(),
            "still cached"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let refused = auth.authenticate(Some(&header(&key))).await;
        assert!(matches!(refused, Err(AuthError::Revoked(_))), "{refused:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cache_lifetime_above_a_minute_is_a_minute() {
        let (auth, manager) = setup(Duration::from_secs(3600)).await;
        let (key, record) = manager
            .create(NewKey::new("acme".parse().unwrap(), Mode::Live))
            .await
            .unwrap();
        assert!(auth.authenticate(Some(&header(&key))).await.is_ok());
        manager.revoke(&record.id).await.unwrap();
        tokio::time::advance(MAX_CACHE_TTL).await;
        assert!(auth.authenticate(Some(&header(&key))).await.is_err());
    }

    #[tokio::test]
    async fn an_expired_key_is_refused_by_its_id() {
        let store = Arc::new(MemoryStore::new(10));
        let auth = Authenticator::new(store.clone(), Duration::from_secs(30), 0, None).unwrap();
        let key = ApiKey::generate(Mode::Live);
        let expired = KeyRecord {
            id: "key_expired".parse().unwrap(),
            owner: crate::domain::Owner {
                tenant: "acme".parse().unwrap(),
                mode: Mode::Live,
            },
            scopes: Scopes::All,
            label: None,
            hash: key.hash(),
            created_at: Utc::now() - chrono::Duration::days(2),
            last_used_at: None,
            expires_at: Some(Utc::now() - chrono::Duration::seconds(1)),
            revoked_at: None,
            replaces: None,
        };
        store.create_key(&expired).await.unwrap();

        let refused = auth.authenticate(Some(&header(&key))).await;

        assert!(
            matches!(&refused, Err(AuthError::Expired(id)) if id.as_str() == "key_expired"),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn headers_that_are_not_a_bearer_key_are_malformed() {
        let (auth, _) = setup(Duration::from_secs(30)).await;
        let key = ApiKey::generate(Mode::Test);
        for bad in [
            b"".to_vec(),
            b"Bearer".to_vec(),
            b"Basic dXNlcjpwYXNz".to_vec(),
            format!("Token {}", key.expose()).into_bytes(),
            b"Bearer kyc_test_short".to_vec(),
            vec![0xff, 0xfe, b' ', b'x'],
        ] {
            let refused = auth.authenticate(Some(&bad)).await;
            assert!(matches!(refused, Err(AuthError::Malformed)), "{refused:?}");
        }
        let unknown = auth.authenticate(Some(&header(&key))).await;
        assert!(matches!(unknown, Err(AuthError::Unknown)), "{unknown:?}");
        let lower = format!("bearer {}", key.expose()).into_bytes();
        assert!(matches!(
            auth.authenticate(Some(&lower)).await,
            Err(AuthError::Unknown)
        ));
        assert!(matches!(
            auth.authenticate(None).await,
            Err(AuthError::Missing)
        ));
    }

    #[tokio::test]
    async fn a_key_may_act_until_it_is_revoked_and_the_bootstrap_key_while_configured() {
        let store = Arc::new(MemoryStore::new(10));
        let boot = ApiKey::generate(Mode::Test);
        let auth = Authenticator::new(
            store.clone(),
            Duration::from_secs(30),
            0,
            Some((boot.expose(), "ops")),
        )
        .unwrap();
        let manager = KeyManager::new(store.clone());
        let (key, record) = manager
            .create(NewKey::new("acme".parse().unwrap(), Mode::Test))
            .await
            .unwrap();
        // Cached as valid: the revocation below must count all the same.
        assert!(auth.authenticate(Some(&header(&key))).await.is_ok());
        assert!(auth.may_act(&record.id).await.unwrap());
        manager.revoke(&record.id).await.unwrap();
        assert!(!auth.may_act(&record.id).await.unwrap());
        assert!(!auth.may_act(&KeyId::generate()).await.unwrap());

        let booted = auth
            .authenticate(Some(&header(&boot)))
            .await
            .unwrap()
            .key
            .id
            .clone();
        assert!(auth.may_act(&booted).await.unwrap());
        let unconfigured = Authenticator::new(store, Duration::ZERO, 0, None).unwrap();
        assert!(!unconfigured.may_act(&booted).await.unwrap());
    }

    #[tokio::test]
    async fn the_bootstrap_key_acts_for_its_tenant_with_every_scope() {
        let store = Arc::new(MemoryStore::new(10));
        let key = ApiKey::generate(Mode::Test);
        let auth = Authenticator::new(
            store,
            Duration::from_secs(30),
            0,
            Some((key.expose(), "ops")),
        )
        .unwrap();
        let caller = auth
            .authorize(Some(&header(&key)), Scope::ReviewsWrite)
            .await
            .unwrap();
        assert_eq!(caller.key.owner.tenant.as_str(), "ops");
        assert_eq!(caller.key.owner.mode, Mode::Test);
        assert!(caller.key.id.as_str().starts_with("key_boot_"));
        for (bad, why) in [
            ("secret".to_owned(), "malformed"),
            (ApiKey::generate(Mode::Live).expose().to_owned(), "live"),
        ] {
            let refused = Authenticator::new(
                Arc::new(MemoryStore::new(1)),
                Duration::ZERO,
                0,
                Some((&bad, "ops")),
            );
            assert!(refused.is_err(), "{why}");
        }
    }
}
