//! How paths are written into the tool's files, so that no name is ever changed on the
//! way: in JSON as a string when the path is valid UTF-8, else as an array of bytes; in
//! binary files ([`bytes`]) as the raw bytes.

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

/// `#[serde(with = "crate::tree::pathser")]` for a `PathBuf` field.
pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    PathRepr::from_path(p).serialize(s)
}

/// `#[serde(with = "crate::tree::pathser")]` for a `PathBuf` field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    Ok(PathRepr::deserialize(d)?.into_path())
}

/// The same for `Vec<PathBuf>`.
pub mod vec {
    use super::*;

    pub fn serialize<S: Serializer>(p: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        p.iter()
            .map(|p| PathRepr::from_path(p))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Ok(Vec::<PathRepr>::deserialize(d)?
            .into_iter()
            .map(PathRepr::into_path)
            .collect())
    }
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

/// Paths as raw bytes, for the tool's binary files (postcard): `#[serde(with =
/// "crate::tree::pathser::bytes")]`.
pub mod bytes {
    use super::*;

    struct Visitor;

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = PathBuf;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a path as bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<PathBuf, E> {
            Ok(PathBuf::from(OsString::from_vec(v.to_vec())))
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<PathBuf, E> {
            Ok(PathBuf::from(OsString::from_vec(v)))
        }
    }

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(p.as_os_str().as_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        d.deserialize_bytes(Visitor)
    }

    /// A path borrowed from the bytes being decoded (`&'de Path`), in the same
    /// encoding as [`bytes`](self): `#[serde(borrow, with = "pathser::bytes::borrowed")]`.
    pub mod borrowed {
        use super::*;

        pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
            super::serialize(p, s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'de Path, D::Error> {
            let b = <&'de [u8]>::deserialize(d)?;
            Ok(Path::new(std::ffi::OsStr::from_bytes(b)))
        }

        /// The same for `Option<&Path>`.
        pub mod opt {
            use super::*;

            #[derive(Serialize, Deserialize)]
            struct Wrap<'a>(#[serde(borrow, with = "super")] &'a Path);

            pub fn serialize<S: Serializer>(p: &Option<&Path>, s: S) -> Result<S::Ok, S::Error> {
                match p {
                    Some(p) => s.serialize_some(&Wrap(p)),
                    None => s.serialize_none(),
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(
                d: D,
            ) -> Result<Option<&'de Path>, D::Error> {
                Ok(Option::<Wrap<'de>>::deserialize(d)?.map(|w| w.0))
            }
        }
    }

    /// The same for `Option<PathBuf>`.
    pub mod opt {
        use super::*;

        #[derive(Serialize, Deserialize)]
        struct Wrap(#[serde(with = "super")] PathBuf);

        pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
            match p {
                Some(p) => s.serialize_some(&Ref(p)),
                None => s.serialize_none(),
            }
        }

        struct Ref<'a>(&'a Path);

        impl Serialize for Ref<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::serialize(self.0, s)
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
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

    #[test]
    fn paths_round_trip_as_bytes() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "bytes")]
            p: PathBuf,
            #[serde(with = "bytes::opt")]
            q: Option<PathBuf>,
            #[serde(with = "bytes::opt")]
            r: Option<PathBuf>,
        }
        let t = T {
            p: PathBuf::from(OsString::from_vec(b"a\xffb".to_vec())),
            q: Some("x/y z".into()),
            r: None,
        };
        let back: T = postcard::from_bytes(&postcard::to_allocvec(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
