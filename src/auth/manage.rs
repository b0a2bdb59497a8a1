//! Creating, listing, revoking and rotating keys: what `kyc-orchestrator keys ...` does, and
//! what tests and in-process tools call.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::secret::ApiKey;
use crate::domain::{KeyId, KeyRecord, Mode, Owner, Scopes, TenantId};
use crate::store::{KeyStore, StoreError};

/// Longest label.
pub const MAX_LABEL_LEN: usize = 128;

/// What a new key is for.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub tenant: TenantId,
    pub mode: Mode,
    pub scopes: Scopes,
    pub label: Option<String>,
    /// From now; `None`: the key does not expire.
    pub expires_in: Option<Duration>,
}

impl NewKey {
    /// A key of `tenant` in `mode` with every scope, no label and no expiry.
    pub fn new(tenant: TenantId, mode: Mode) -> Self {
        Self {
            tenant,
            mode,
            scopes: Scopes::All,
            label: None,
            expires_in: None,
        }
    }
}

/// Why a key could not be managed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("no API key {0}")]
    NotFound(KeyId),
    #[error("API key {0} is revoked")]
    Revoked(KeyId),
    #[error("a label is at most {MAX_LABEL_LEN} characters, none of them control characters")]
    Label,
    #[error("the expiry is too far in the future")]
    Expiry,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Manages the keys of one store.
#[derive(Clone)]
pub struct KeyManager {
    keys: Arc<dyn KeyStore>,
}

impl KeyManager {
    pub fn new(keys: Arc<dyn KeyStore>) -> Self {
        Self { keys }
    }

    /// A new key, returned once: only its hash is stored.
    pub async fn create(&self, new: NewKey) -> Result<(ApiKey, KeyRecord), ManageError> {
        self.make(new, None).await
    }

    /// Every key, or `tenant`'s, oldest first.
    pub async fn list(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, ManageError> {
        Ok(self.keys.keys(tenant).await?)
    }

    /// Revokes the key now (idempotent).
    pub async fn revoke(&self, id: &KeyId) -> Result<(), ManageError> {
        if self.keys.revoke_key(id, Utc::now()).await? {
            Ok(())
        } else {
            Err(ManageError::NotFound(id.clone()))
        }
    }

    /// A new key with the old one's tenant, mode, scopes, label and lifetime (a 90-day key is
    /// replaced by a 90-day key); the old one keeps working for `grace` (0: stops now), or
    /// until its own expiry if that comes first.
    pub async fn rotate(
        &self,
        id: &KeyId,
        grace: Duration,
    ) -> Result<(ApiKey, KeyRecord), ManageError> {
        let old = self
            .keys
            .key(id)
            .await?
            .ok_or_else(|| ManageError::NotFound(id.clone()))?;
        if old.revoked_at.is_some() {
            return Err(ManageError::Revoked(id.clone()));
        }
        let template = NewKey {
            tenant: old.owner.tenant.clone(),
            mode: old.owner.mode,
            scopes: old.scopes,
            label: old.label.clone(),
            expires_in: old
                .expires_at
                .map(|at| (at - old.created_at).to_std().unwrap_or_default()),
        };
        self.make(template, Some((old.id, grace))).await
    }

    async fn make(
        &self,
        new: NewKey,
        replaces: Option<(KeyId, Duration)>,
    ) -> Result<(ApiKey, KeyRecord), ManageError> {
        if new.label.as_ref().is_some_and(|label| {
            label.chars().count() > MAX_LABEL_LEN || label.chars().any(char::is_control)
        }) {
            return Err(ManageError::Label);
        }
        let now = Utc::now();
        let after = |duration: Duration| {
            chrono::Duration::from_std(duration)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or(ManageError::Expiry)
        };
        let expires_at = new.expires_in.map(after).transpose()?;
        let key = ApiKey::generate(new.mode);
        let record = KeyRecord {
            id: KeyId::generate(),
            owner: Owner {
                tenant: new.tenant,
                mode: new.mode,
            },
            scopes: new.scopes,
            label: new.label,
            hash: key.hash(),
            created_at: now,
            last_used_at: None,
            expires_at,
            revoked_at: None,
            replaces: replaces.as_ref().map(|(id, _)| id.clone()),
        };
        match replaces {
            None => self.keys.create_key(&record).await?,
            Some((old, grace)) => {
                if !self.keys.rotate_key(&old, after(grace)?, &record).await? {
                    return Err(ManageError::Revoked(old));
                }
            }
        }
        Ok((key, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_rotated_key_keeps_working_for_its_grace_and_the_new_one_inherits_it() {
        let manager = KeyManager::new(Arc::new(MemoryStore::new(1)));
        let mut new = NewKey::new("acme".parse().unwrap(), Mode::Live);
        new.label = Some("payments backend".into());
        new.scopes = Scopes::parse("sessions:read").unwrap();
        let (old_key, old) = manager.create(new).await.unwrap();

        let (new_key, rotated) = manager
            .rotate(&old.id, Duration::from_secs(86_400))
            .await
            .unwrap();

        assert_ne!(new_key.hash(), old_key.hash());
        assert_eq!(rotated.replaces.as_ref(), Some(&old.id));
        assert_eq!(rotated.scopes, old.scopes);
        assert_eq!(rotated.label, old.label);
        assert_eq!(
            rotated.expires_at, None,
            "the old key did not expire, nor does this one"
        );
        let keys = manager.list(None).await.unwrap();
        let old_now = keys.iter().find(|k| k.id == old.id).unwrap();
        let left = old_now.expires_at.unwrap() - Utc::now();
        assert!(left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24));
        assert!(old_now.usable_at(Utc::now()));
        assert!(!old_now.usable_at(Utc::now() + chrono::Duration::hours(25)));
    }

    #[tokio::test]
    async fn revoked_and_unknown_keys_cannot_be_rotated_and_labels_are_checked() {
        let manager = KeyManager::new(Arc::new(MemoryStore::new(1)));
        let (_, key) = manager
            .create(NewKey::new("acme".parse().unwrap(), Mode::Test))
            .await
            .unwrap();
        manager.revoke(&key.id).await.unwrap();
        assert!(matches!(
            manager.rotate(&key.id, Duration::ZERO).await,
            Err(ManageError::Revoked(_))
        ));
        let unknown: KeyId = "key_nobody".parse().unwrap();
        assert!(matches!(
            manager.revoke(&unknown).await,
            Err(ManageError::NotFound(_))
        ));
        let mut bad = NewKey::new("acme".parse().unwrap(), Mode::Test);
        bad.label = Some("line\nbreak".into());
        assert!(matches!(manager.create(bad).await, Err(ManageError::Label)));
    }
}
