//! Session inputs on the filesystem: what a session needs to be re-run after a crash.
//!
//! One file per session, `<dir>/<last two hex digits of the id>/<id>.kin`, written and synced
//! before the session is accepted. The format is canonical (the same request always encodes to
//! the same bytes), so its SHA-256 is also the request's idempotency fingerprint:
//!
//! ```text
//! "KYCIN1\n"  u32 LE header length  header (JSON: reference, document kind, sandbox script,
//!                                   part roles and lengths)  the parts' bytes, in order
//! ```
//!
//! Images never go to the database, and nothing here is logged but session ids and sizes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::UnreadableJson;
use crate::domain::{
    Claimed, Document, DocumentType, ImageData, ImageLimits, NewSession, Reference, SandboxScript,
    SelfieChallenge, SessionId,
};

const MAGIC: &[u8] = b"KYCIN1\n";

/// Why inputs could not be stored or read back.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("cannot write or read the session inputs")]
    Io(#[from] std::io::Error),
    /// What is unreadable, and why when another error says so.
    #[error("the stored session inputs are unreadable: {what}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl BlobError {
    fn corrupt(what: &'static str) -> Self {
        Self::Corrupt { what, source: None }
    }

    fn corrupt_because(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Corrupt {
            what,
            source: Some(source.into()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    document_kind: Option<DocumentType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<SandboxScript>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimed: Option<Claimed>,
    /// The liveness challenge the selfie answers, with its steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    challenge: Option<SelfieChallenge>,
    /// Role (`selfie`, `document_front`, `document_back`) and length of each part, in order.
    parts: Vec<(String, u64)>,
}

/// A session's inputs, encoded.
pub struct StoredInputs {
    bytes: Vec<u8>,
}

impl StoredInputs {
    /// Encodes the request canonically.
    pub fn encode(session: &NewSession) -> Self {
        let mut parts: Vec<(&str, &ImageData)> = session
            .selfie
            .frames()
            .iter()
            .map(|frame| ("selfie", frame))
            .collect();
        parts.push(("document_front", &session.document.front));
        if let Some(back) = &session.document.back {
            parts.push(("document_back", back));
        }
        let header = Header {
            reference: session.reference.as_ref().map(|r| r.as_str().to_owned()),
            document_kind: session.document.kind,
            sandbox: session.sandbox.clone(),
            claimed: session.claimed.clone(),
            challenge: session.selfie.challenge.clone(),
            parts: parts
                .iter()
                .map(|(role, image)| ((*role).to_owned(), image.bytes().len() as u64))
                .collect(),
        };
        let header = serde_json::to_vec(&header).expect("the header serialises");
        let body: usize = parts.iter().map(|(_, image)| image.bytes().len()).sum();
        let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + header.len() + body);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header);
        for (_, image) in parts {
            bytes.extend_from_slice(image.bytes());
        }
        Self { bytes }
    }

    /// SHA-256 of the encoding, hex: equal for equal requests however they were sent.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(&self.bytes);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Decodes stored inputs, checking every image again under `limits`.
    pub fn decode(bytes: Bytes, limits: &ImageLimits) -> Result<NewSession, BlobError> {
        let corrupt = BlobError::corrupt;
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| corrupt("unknown format"))?;
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("truncated header"))?;
        let len = u32::from_le_bytes(*len) as usize;
        let header = rest.get(..len).ok_or_else(|| corrupt("truncated header"))?;
        // The header holds the claimed identity: its parse error must not quote it.
        let header: Header = serde_json::from_slice(header)
            .map_err(|e| BlobError::corrupt_because("header", UnreadableJson::from(e)))?;
        let mut offset = MAGIC.len() + 4 + len;
        let mut frames = Vec::new();
        let (mut front, mut back) = (None, None);
        for (role, len) in header.parts {
            let end = usize::try_from(len)
                .ok()
                .and_then(|len| offset.checked_add(len))
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| corrupt("truncated image"))?;
            let image = |part| {
                ImageData::parse(bytes.slice(offset..end), limits)
                    .map_err(|e| BlobError::corrupt_because(part, e))
            };
            match role.as_str() {
                "selfie" => frames.push(image("selfie")?),
                "document_front" => front = Some(image("document_front")?),
                "document_back" => back = Some(image("document_back")?),
                _ => return Err(corrupt("unknown part")),
            }
            offset = end;
        }
        let reference = header
            .reference
            .map(|r| Reference::parse(r, usize::MAX))
            .transpose()
            .map_err(|e| BlobError::corrupt_because("reference", e))?;
        Ok(NewSession {
            reference,
            selfie: crate::domain::Selfie::new(frames)
                .map(|mut selfie| {
                    selfie.challenge = header.challenge;
                    selfie
                })
                .ok_or_else(|| corrupt("no selfie"))?,
            document: Document {
                kind: header.document_kind,
                front: front.ok_or_else(|| corrupt("no document front"))?,
                back,
            },
            claimed: header.claimed,
            sandbox: header.sandbox,
        })
    }
}

/// The blob directory.
#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
    fsync: bool,
}

impl Blobs {
    /// Creates the directory if needed.
    pub fn open(dir: impl Into<PathBuf>, fsync: bool) -> Result<Self, BlobError> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Self { dir, fsync })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: SessionId) -> PathBuf {
        let name = id.to_string();
        self.dir
            .join(&name[name.len() - 2..])
            .join(format!("{name}.kin"))
    }

    /// Writes the session's inputs; with `fsync`, returns once they survive a power cut.
    /// Blocking: call from the blocking pool.
    ///
    /// Without `fsync` the file is written in place: the session's row is committed only after
    /// this returns, so a file cut short by a crash is never named by a session (and with an
    /// fsync-less commit, a power cut may take either). With `fsync`, it is written aside,
    /// synced, then renamed, and the directory synced.
    pub fn save(&self, id: SessionId, inputs: &StoredInputs) -> Result<(), BlobError> {
        let path = self.path(id);
        let shard = path.parent().expect("a blob path has a shard directory");
        if !self.fsync {
            return match fs::write(&path, &inputs.bytes) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir_all(shard)?;
                    Ok(fs::write(&path, &inputs.bytes)?)
                }
                result => Ok(result?),
            };
        }
        fs::create_dir_all(shard)?;
        let partial = path.with_extension("kin.partial");
        let mut file = fs::File::create(&partial)?;
        file.write_all(&inputs.bytes)?;
        file.sync_all()?;
        fs::rename(&partial, &path)?;
        fs::File::open(shard)?.sync_all()?;
        Ok(())
    }

    /// The stored inputs; `None` when there are none (erased, or never written).
    pub fn load(&self, id: SessionId) -> Result<Option<Bytes>, BlobError> {
        match fs::read(self.path(id)) {
            Ok(bytes) => Ok(Some(bytes.into())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn portrait_path(&self, id: SessionId) -> PathBuf {
        self.path(id).with_extension("portrait.png")
    }

    /// Keeps the document's portrait as the agents found it (PNG), beside the inputs, for the
    /// people who review the session. Made from the inputs, so not synced: a crash may lose
    /// it, never the session. Blocking.
    pub fn save_portrait(&self, id: SessionId, png: &[u8]) -> Result<(), BlobError> {
        let path = self.portrait_path(id);
        fs::create_dir_all(path.parent().expect("a blob path has a shard directory"))?;
        // Written aside and renamed: a reader never sees half a picture.
        let partial = path.with_extension("png.partial");
        fs::write(&partial, png)?;
        fs::rename(&partial, &path)?;
        Ok(())
    }

    /// The kept portrait, if any.
    pub fn portrait(&self, id: SessionId) -> Result<Option<Bytes>, BlobError> {
        match fs::read(self.portrait_path(id)) {
            Ok(bytes) => Ok(Some(bytes.into())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes the session's inputs and what was kept of them; deleting what is not there is
    /// not an error.
    pub fn delete(&self, id: SessionId) -> Result<(), BlobError> {
        for path in [self.portrait_path(id), self.path(id)] {
            match fs::remove_file(path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(error.into());
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Cursor;

    use super::*;
    use crate::domain::SandboxDirective;
    use crate::domain::{ChallengeStep, Selfie};

    const LIMITS: ImageLimits = ImageLimits {
        max_bytes: 1 << 20,
        max_pixels: 1 << 20,
        max_side: 1024,
    };

    fn png(shade: u8) -> ImageData {
        let mut out = Vec::new();
        image::GrayImage::from_pixel(4, 3, image::Luma([shade]))
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        ImageData::parse(out.into(), &LIMITS).unwrap()
    }

    fn session() -> NewSession {
        NewSession {
            reference: Some(Reference::parse("customer-7".into(), 64).unwrap()),
            selfie: Selfie::new(vec![png(10), png(20)])
                .map(|mut selfie| {
                    selfie.challenge = Some(SelfieChallenge {
                        id: "chl_abc".parse().unwrap(),
                        steps: vec![ChallengeStep::TurnLeft, ChallengeStep::TurnRight],
                    });
                    selfie
                })
                .unwrap(),
            document: Document {
                kind: Some(DocumentType::Passport),
                front: png(30),
                back: Some(png(40)),
            },
            claimed: Some(Claimed {
                surname: Some("Eriksson".into()),
                date_of_birth: chrono::NaiveDate::from_ymd_opt(1974, 8, 12),
                ..Claimed::default()
            }),
            sandbox: Some(SandboxScript(BTreeMap::from([(
                "ocr".to_owned(),
                SandboxDirective {
                    latency_ms: Some(5),
                    ..Default::default()
                },
            )]))),
        }
    }

    #[test]
    fn inputs_survive_a_round_trip_through_the_directory_synced_or_not() {
        for fsync in [true, false] {
            round_trip(fsync);
        }
    }

    fn round_trip(fsync: bool) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path(), fsync).unwrap();
        let id = SessionId::new();
        let original = session();
        let encoded = StoredInputs::encode(&original);
        blobs.save(id, &encoded).unwrap();

        let bytes = blobs.load(id).unwrap().expect("saved");
        let back = StoredInputs::decode(bytes, &LIMITS).unwrap();
        assert_eq!(
            StoredInputs::encode(&back).fingerprint(),
            encoded.fingerprint()
        );
        assert_eq!(back.selfie.frames().len(), 2);
        assert_eq!(
            back.selfie.frames()[1].bytes(),
            original.selfie.frames()[1].bytes()
        );
        assert_eq!(back.document.back.unwrap().bytes(), png(40).bytes());
        assert_eq!(back.reference.unwrap().as_str(), "customer-7");
        assert_eq!(back.claimed, session().claimed);
        assert_eq!(back.selfie.challenge, session().selfie.challenge);
        assert_eq!(back.sandbox.unwrap().0["ocr"].latency_ms, Some(5));

        blobs.delete(id).unwrap();
        assert!(blobs.load(id).unwrap().is_none());
        blobs.delete(id).unwrap();
    }

    #[test]
    fn a_kept_portrait_goes_with_the_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path(), false).unwrap();
        let id = SessionId::new();
        assert!(blobs.portrait(id).unwrap().is_none());
        blobs.save(id, &StoredInputs::encode(&session())).unwrap();
        let portrait = png(50);

        blobs.save_portrait(id, portrait.bytes()).unwrap();

        assert_eq!(blobs.portrait(id).unwrap().unwrap(), portrait.bytes());
        assert!(blobs.load(id).unwrap().is_some(), "beside the inputs");
        blobs.delete(id).unwrap();
        assert!(blobs.portrait(id).unwrap().is_none());
        assert!(blobs.load(id).unwrap().is_none());
    }

    #[test]
    fn equal_requests_share_a_fingerprint_and_different_ones_do_not() {
        let a = StoredInputs::encode(&session());
        assert_eq!(
            a.fingerprint(),
            StoredInputs::encode(&session()).fingerprint()
        );
        assert_eq!(a.fingerprint().len(), 64);
        let mut other = session();
        other.document.back = None;
        assert_ne!(a.fingerprint(), StoredInputs::encode(&other).fingerprint());
    }

    #[test]
    fn damaged_inputs_are_refused_not_misread() {
        let encoded = StoredInputs::encode(&session()).bytes;
        for bad in [
            Bytes::from_static(b"not inputs"),
            Bytes::copy_from_slice(&encoded[..encoded.len() - 5]),
            Bytes::copy_from_slice(&encoded[..20]),
        ] {
            assert!(matches!(
                StoredInputs::decode(bad, &LIMITS),
                Err(BlobError::Corrupt { .. })
            ));
        }
    }
}
