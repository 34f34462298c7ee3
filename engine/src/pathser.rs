//! How paths are written into the tool's JSON files: as a string when the path is valid
//! UTF-8, else as an array of bytes, so that no name is ever changed on the way.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A path as JSON: a string, or an array of bytes for names that are not UTF-8.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum PathRepr {
    Str(String),
    Bytes(Vec<u8>),
}

impl PathRepr {
    pub fn from_path(p: &Path) -> PathRepr {
        match p.to_str() {
            Some(s) => PathRepr::Str(s.to_string()),
            None => PathRepr::Bytes(p.as_os_str().as_bytes().to_vec()),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            PathRepr::Str(s) => s.as_bytes(),
            PathRepr::Bytes(b) => b,
        }
    }

    pub fn into_path(self) -> PathBuf {
        match self {
            PathRepr::Str(s) => PathBuf::from(s),
            PathRepr::Bytes(b) => PathBuf::from(OsString::from_vec(b)),
        }
    }
}

/// `#[serde(with = "crate::pathser")]` for a `PathBuf` field.
pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    PathRepr::from_path(p).serialize(s)
}

/// `#[serde(with = "crate::pathser")]` for a `PathBuf` field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    Ok(PathRepr::deserialize(d)?.into_path())
}

/// The same for `Option<PathBuf>`.
pub mod opt {
    use super::*;

    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        p.as_deref().map(PathRepr::from_path).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Ok(Option::<PathRepr>::deserialize(d)?.map(PathRepr::into_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_paths_round_trip() {
        let p = PathBuf::from(OsString::from_vec(b"a\xffb".to_vec()));
        let json = serde_json::to_string(&PathRepr::from_path(&p)).unwrap();
        let back: PathRepr = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_path(), p);
        let json = serde_json::to_string(&PathRepr::from_path(Path::new("x y"))).unwrap();
        assert_eq!(json, "\"x y\"");
    }
}
