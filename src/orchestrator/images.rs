//! A session's stored images, read back for people (the console) through the API.

use std::str::FromStr;

use super::{Orchestrator, OrchestratorError};
use crate::domain::{ImageData, NewSession, Owner, SessionId};
use crate::store::StoredInputs;
use crate::telemetry::ErrorChain;

/// One image of a session's inputs, by the name the API gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePart {
    DocumentFront,
    DocumentBack,
    /// A selfie frame, from 0 in capture order.
    Selfie(usize),
}

impl ImagePart {
    /// The parts `inputs` has, in order: the document, then the frames.
    pub fn all_of(inputs: &NewSession) -> Vec<Self> {
        let mut parts = vec![Self::DocumentFront];
        if inputs.document.back.is_some() {
            parts.push(Self::DocumentBack);
        }
        parts.extend((0..inputs.selfie.frames().len()).map(Self::Selfie));
        parts
    }

    fn of(self, inputs: &NewSession) -> Option<&ImageData> {
        match self {
            Self::DocumentFront => Some(&inputs.document.front),
            Self::DocumentBack => inputs.document.back.as_ref(),
            Self::Selfie(i) => inputs.selfie.frames().get(i),
        }
    }
}

impl std::fmt::Display for ImagePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DocumentFront => f.write_str("document_front"),
            Self::DocumentBack => f.write_str("document_back"),
            Self::Selfie(i) => write!(f, "selfie_{i}"),
        }
    }
}

impl FromStr for ImagePart {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "document_front" => Ok(Self::DocumentFront),
            "document_back" => Ok(Self::DocumentBack),
            _ => {
                let index = s.strip_prefix("selfie_").ok_or(())?;
                // Digits only, without a sign or leading zeros: one name per frame.
                if index.is_empty()
                    || !index.bytes().all(|b| b.is_ascii_digit())
                    || (index.len() > 1 && index.starts_with('0'))
                {
                    return Err(());
                }
                index.parse().map(Self::Selfie).map_err(|_| ())
            }
        }
    }
}

/// What there is to show of a session's images.
#[derive(Debug)]
pub enum SessionImages {
    /// Its inputs, as stored.
    Kept(Box<NewSession>),
    /// No such session for the owner.
    Unknown,
    /// Erased, by a request or by retention.
    Erased,
    /// This store keeps no inputs (`memory://`), or they are gone.
    NotKept,
}

impl SessionImages {
    /// The image `part`, where kept.
    pub fn part(&self, part: ImagePart) -> Option<&ImageData> {
        match self {
            Self::Kept(inputs) => part.of(inputs),
            _ => None,
        }
    }
}

impl Orchestrator {
    /// `owner`'s session `id`'s stored images.
    pub async fn images(
        &self,
        owner: &Owner,
        id: SessionId,
    ) -> Result<SessionImages, OrchestratorError> {
        let Some(record) = self.inner.store.find(owner, id).await? else {
            return Ok(SessionImages::Unknown);
        };
        if record.images_erased_at.is_some() || record.erased_at.is_some() {
            return Ok(SessionImages::Erased);
        }
        let Some(blobs) = self.inner.durability.blobs.clone() else {
            return Ok(SessionImages::NotKept);
        };
        let limits = self.inner.durability.input_limits;
        let read = tokio::task::spawn_blocking(move || {
            blobs
                .load(id)
                .map_err(|e| ErrorChain(&e).to_string())?
                .map(|bytes| StoredInputs::decode(bytes, &limits))
                .transpose()
                .map_err(|e| ErrorChain(&e).to_string())
        })
        .await
        .unwrap_or_else(|_| Err("reading the session's inputs panicked".into()));
        match read {
            Ok(Some(inputs)) => Ok(SessionImages::Kept(Box::new(inputs))),
            Ok(None) => Ok(SessionImages::NotKept),
            Err(error) => {
                tracing::error!(session_id = %id, error = %error, "cannot read a session's stored inputs");
                Ok(SessionImages::NotKept)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_has_one_name() {
        for part in [
            ImagePart::DocumentFront,
            ImagePart::DocumentBack,
            ImagePart::Selfie(0),
            ImagePart::Selfie(23),
        ] {
            assert_eq!(part.to_string().parse(), Ok(part));
        }
        for name in [
            "selfie_",
            "selfie_01",
            "selfie_-1",
            "selfie_+1",
            "portrait",
            "selfie_x",
        ] {
            assert_eq!(name.parse::<ImagePart>(), Err(()), "{name}");
        }
    }
}
