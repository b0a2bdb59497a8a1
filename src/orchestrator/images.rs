//! A session's stored images, read back for people (the console) through the API: the inputs
//! as sent, and the document's portrait as the agents cut it out (kept when the session ends).

use std::str::FromStr;
use std::sync::Arc;

use image::RgbImage;

use super::{Inner, Orchestrator, OrchestratorError};
use crate::agents::Output;
use crate::agents::doc_capture::Captured;
use crate::domain::{ImageData, ImageLimits, NewSession, Owner, SessionId};
use crate::store::StoredInputs;
use crate::telemetry::ErrorChain;

/// One image of a session's inputs, by the name the API gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePart {
    DocumentFront,
    DocumentBack,
    /// The portrait doc_capture cut out of the document: the face face_match compared.
    DocumentPortrait,
    /// A selfie frame, from 0 in capture order.
    Selfie(usize),
}

impl std::fmt::Display for ImagePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DocumentFront => f.write_str("document_front"),
            Self::DocumentBack => f.write_str("document_back"),
            Self::DocumentPortrait => f.write_str("document_portrait"),
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
            "document_portrait" => Ok(Self::DocumentPortrait),
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
    /// Its inputs, as stored, and the document's portrait where one was kept.
    Kept {
        inputs: Box<NewSession>,
        portrait: Option<ImageData>,
    },
    /// No such session for the owner.
    Unknown,
    /// Erased, by a request or by retention (or being erased: the files go before the row
    /// says so).
    Erased,
    /// This store keeps no inputs (`memory://`).
    NotKept,
}

impl SessionImages {
    /// The names of the images kept, in order.
    pub fn names(&self) -> Vec<ImagePart> {
        let Self::Kept { inputs, portrait } = self else {
            return Vec::new();
        };
        let mut names = vec![ImagePart::DocumentFront];
        if inputs.document.back.is_some() {
            names.push(ImagePart::DocumentBack);
        }
        if portrait.is_some() {
            names.push(ImagePart::DocumentPortrait);
        }
        names.extend((0..inputs.selfie.frames().len()).map(ImagePart::Selfie));
        names
    }

    /// The image `part`, where kept.
    pub fn part(&self, part: ImagePart) -> Option<&ImageData> {
        let Self::Kept { inputs, portrait } = self else {
            return None;
        };
        match part {
            ImagePart::DocumentFront => Some(&inputs.document.front),
            ImagePart::DocumentBack => inputs.document.back.as_ref(),
            ImagePart::DocumentPortrait => portrait.as_ref(),
            ImagePart::Selfie(i) => inputs.selfie.frames().get(i),
        }
    }
}

/// What a kept portrait is read back within: a crop of a rectified document (at most 1,600
/// pixels wide), with room to spare.
const PORTRAIT_LIMITS: ImageLimits = ImageLimits {
    max_bytes: 16 * 1024 * 1024,
    max_pixels: 4_000_000,
    max_side: 4_000,
};

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
            let Some(bytes) = blobs.load(id).map_err(|e| ErrorChain(&e).to_string())? else {
                return Ok(None);
            };
            let inputs =
                StoredInputs::decode(bytes, &limits).map_err(|e| ErrorChain(&e).to_string())?;
            // A portrait that cannot be read is left out, not the session's own images.
            let portrait = match blobs.portrait(id) {
                Ok(bytes) => bytes.and_then(|b| ImageData::parse(b, &PORTRAIT_LIMITS).ok()),
                Err(error) => {
                    tracing::warn!(session_id = %id, error = %ErrorChain(&error), "cannot read a session's kept portrait");
                    None
                }
            };
            Ok(Some((inputs, portrait)))
        })
        .await
        .unwrap_or_else(|_| Err("reading the session's inputs panicked".to_owned()));
        match read {
            Ok(Some((inputs, portrait))) => Ok(SessionImages::Kept {
                inputs: Box::new(inputs),
                portrait,
            }),
            // Every session a store with inputs accepted had them written first: without them
            // now, they have been deleted, by an erasure under way (the files go before the row
            // is marked) or with an insert that failed (its session completed `interrupted`).
            Ok(None) => Ok(SessionImages::Erased),
            Err(error) => {
                tracing::error!(session_id = %id, error = %error, "cannot read a session's stored inputs");
                Ok(SessionImages::NotKept)
            }
        }
    }
}

impl Inner {
    /// Keeps the document's portrait among `outputs` (doc_capture's, local or remote) beside
    /// the session's inputs, where inputs are kept: what a reviewer sees beside the selfie.
    /// A failure is logged and costs the console that picture, nothing else.
    pub(super) async fn keep_portrait<'a>(
        &self,
        id: SessionId,
        outputs: impl Iterator<Item = &'a Output>,
    ) {
        let Some(blobs) = self.durability.blobs.clone() else {
            return;
        };
        let Some(portrait): Option<Arc<RgbImage>> = outputs
            .filter_map(|output| output.downcast_ref::<Captured>())
            .find_map(|captured| captured.portrait.clone())
        else {
            return;
        };
        let kept = tokio::task::spawn_blocking(move || {
            let png = crate::vision::encode_png(&portrait).map_err(|e| e.to_string())?;
            blobs
                .save_portrait(id, &png)
                .map_err(|e| ErrorChain(&e).to_string())
        })
        .await
        .unwrap_or_else(|_| Err("keeping the portrait panicked".to_owned()));
        if let Err(error) = kept {
            tracing::warn!(error = %error, "cannot keep the document's portrait");
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
            ImagePart::DocumentPortrait,
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
