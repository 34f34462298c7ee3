//! The registry `.info.json` in the data home: for every versioned directory (by absolute
//! path), where its store is and the name of its versions there, so that a restore finds
//! them even when the directory itself is gone. Every change is a read-modify-write under
//! a lock, written atomically, so concurrent runs on other directories keep their entries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use engine::error::Error;
use engine::fs;
use engine::run::home::DataHome;
use engine::tree::pathser;

/// One registered directory.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RegEntry {
    /// The directory's absolute path (exact bytes).
    #[serde(with = "pathser")]
    pub path: PathBuf,
    /// The store holding its versions (absolute).
    #[serde(with = "pathser")]
    pub store: PathBuf,
    /// `<store>/<name>/` is its history (`<name>_1`, `<name>_0` in the earlier layout).
    pub name: String,
    /// For a path under which the versions are also found (oneway's BACKUP): the
    /// versioned directory itself.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "pathser::opt"
    )]
    pub alias_of: Option<PathBuf>,
    /// When the latest version was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// The latest version was made by a pass that ended with errors.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    /// Every other store that holds versions of this directory (a source backed up to
    /// two drives): `store`/`name` is the one used last, and none is ever forgotten.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_stores: Vec<StoreRef>,
    /// Other live directories holding the same content (twoway's other replica): a
    /// restore may take a version's file from them, checked by its SHA-256.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "pathser::vec")]
    pub twins: Vec<PathBuf>,
}

/// A store holding versions of a directory, besides the entry's own.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoreRef {
    #[serde(with = "pathser")]
    pub store: PathBuf,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// The live directories holding the same content, as that store's pass said.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "pathser::vec")]
    pub twins: Vec<PathBuf>,
}

impl RegEntry {
    /// This entry once for each store holding its versions, the one used last first.
    pub fn per_store(&self) -> Vec<RegEntry> {
        let mut out = vec![RegEntry {
            other_stores: Vec::new(),
            ..self.clone()
        }];
        out.extend(self.other_stores.iter().map(|o| RegEntry {
            store: o.store.clone(),
            name: o.name.clone(),
            updated: o.updated.clone(),
            other_stores: Vec::new(),
            twins: o.twins.clone(),
            ..self.clone()
        }));
        out
    }
}

/// The registry file's contents.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Registry {
    #[serde(default)]
    pub dirs: BTreeMap<String, RegEntry>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn key(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Registry {
    /// Reads the registry (empty if there is none yet).
    pub fn load(home: &DataHome) -> Result<Registry, Error> {
        let file = home.registry_file();
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::entry(file, format!("damaged registry: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
            Err(e) => Err(Error::io("read", file, e)),
        }
    }

    /// The entry for `dir`, following an alias to the versioned directory; through an
    /// alias (oneway's BACKUP), the alias's own store comes first.
    pub fn find(&self, dir: &Path) -> Option<RegEntry> {
        let k = key(dir);
        let hit = self
            .dirs
            .get(&k)
            .filter(|e| e.path == dir)
            .or_else(|| self.dirs.values().find(|e| e.path == dir))?;
        let Some(real) = &hit.alias_of else {
            return Some(hit.clone());
        };
        let Some(found) = self
            .dirs
            .values()
            .find(|e| &e.path == real && e.alias_of.is_none())
        else {
            return Some(hit.clone());
        };
        let mut reordered = Registry::default();
        reordered.insert(found.clone());
        reordered.insert(RegEntry {
            path: found.path.clone(),
            store: hit.store.clone(),
            name: hit.name.clone(),
            alias_of: None,
            updated: found
                .per_store()
                .into_iter()
                .find(|e| e.store == hit.store)
                .and_then(|e| e.updated),
            incomplete: hit.incomplete,
            other_stores: Vec::new(),
            twins: found.twins.clone(),
        });
        reordered.dirs.into_values().next()
    }

    /// The entry for `dir` as [`find`](Self::find) gives it; where this data home does
    /// not know `dir` (a new machine after the old one's disk died, a new home), or not
    /// with the store named, one found on disk: in `store` if named, else in the store
    /// at the top of `dir` (a BACKUP's, or a twoway replica's), whose histories' latest
    /// versions name the directory each keeps. What is found is added to the registry,
    /// so that every later command knows it too.
    pub fn find_or_discover(
        home: &DataHome,
        dir: &Path,
        store: Option<&Path>,
    ) -> Result<Option<RegEntry>, Error> {
        let known = Registry::load(home)?.find(dir);
        let knows_store =
            |e: &RegEntry| store.is_none_or(|s| e.per_store().iter().any(|x| x.store == s));
        if let Some(e) = known.as_ref().filter(|e| knows_store(e)) {
            return Ok(Some(e.clone()));
        }
        let own_store = dir.join(engine::names::VERSIONS_DIR);
        let Some(found) = discover(dir, store.unwrap_or(&own_store)) else {
            return Ok(known);
        };
        // A warning, so that it goes to stderr (never into `list --json`'s document).
        log::warn!(
            "found the versions of {} in the store {} (this data home did not know them; now it does)",
            engine::names::display(&found.path),
            engine::names::display(&found.store)
        );
        let alias = (found.path != dir).then(|| RegEntry {
            path: dir.to_path_buf(),
            alias_of: Some(found.path.clone()),
            ..found.clone()
        });
        let noted = Registry::update(home, |r| {
            r.insert(found.clone());
            if let Some(a) = alias {
                r.insert(a);
            }
        });
        match noted {
            Ok(()) => Ok(Registry::load(home)?.find(dir).or(Some(found))),
            // A data home that cannot be written: this command still has what it found.
            Err(e) => {
                log::warn!("{e}");
                Ok(Some(found))
            }
        }
    }

    /// The directory `dir` is the BACKUP of (by oneway), if the registry knows it as one.
    pub fn backup_of(&self, dir: &Path) -> Option<&Path> {
        self.dirs
            .values()
            .find(|e| e.path == dir)
            .and_then(|e| e.alias_of.as_deref())
    }

    /// Every versioned directory (aliases left out).
    pub fn versioned(&self) -> impl Iterator<Item = &RegEntry> {
        self.dirs.values().filter(|e| e.alias_of.is_none())
    }

    /// Changes the registry under its lock and writes it back atomically.
    pub fn update(home: &DataHome, change: impl FnOnce(&mut Registry)) -> Result<(), Error> {
        let _lock = home.lock_wait("registry")?;
        let mut reg = Registry::load(home)?;
        change(&mut reg);
        let file = home.registry_file();
        let bytes = serde_json::to_vec_pretty(&reg)
            .map_err(|e| Error::io("encode", &file, std::io::Error::other(e)))?;
        fs::write_atomic(&file, &bytes)
    }

    /// Adds or updates the entry for `entry.path`. A store the entry had before that is
    /// not `entry.store` is kept among its other stores: versions are never forgotten.
    pub fn insert(&mut self, mut entry: RegEntry) {
        let mut k = key(&entry.path);
        // Two different non-UTF-8 paths may show the same: keep both.
        while self.dirs.get(&k).is_some_and(|e| e.path != entry.path) {
            k.push('~');
        }
        if let Some(old) = self.dirs.remove(&k) {
            let mut others = old.other_stores;
            if old.store != entry.store {
                others.push(StoreRef {
                    store: old.store,
                    name: old.name,
                    updated: old.updated,
                    twins: old.twins,
                });
            }
            others.retain(|o| o.store != entry.store);
            for o in entry.other_stores.drain(..) {
                if !others.iter().any(|x| x.store == o.store) && o.store != entry.store {
                    others.push(o);
                }
            }
            entry.other_stores = others;
        }
        self.dirs.insert(k, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_updates_keep_every_entry() {
        let d = tempfile::tempdir().unwrap();
        let home = DataHome::at(d.path());
        std::thread::scope(|s| {
            for i in 0..8 {
                let home = home.clone();
                s.spawn(move || {
                    Registry::update(&home, |r| {
                        r.insert(RegEntry {
                            path: PathBuf::from(format!("/dir{i}")),
                            store: PathBuf::from("/s"),
                            name: format!("dir{i}"),
                            alias_of: None,
                            updated: None,
                            incomplete: false,
                            other_stores: Vec::new(),
                            twins: Vec::new(),
                        })
                    })
                    .unwrap();
                });
            }
        });
        assert_eq!(Registry::load(&home).unwrap().dirs.len(), 8);
    }

    #[test]
    fn alias_leads_to_the_versioned_directory() {
        let mut r = Registry::default();
        let e = RegEntry {
            path: "/src".into(),
            store: "/b/__versions__".into(),
            name: "src".into(),
            alias_of: None,
            updated: None,
            incomplete: false,
            other_stores: Vec::new(),
            twins: Vec::new(),
        };
        r.insert(e.clone());
        r.insert(RegEntry {
            path: "/b".into(),
            alias_of: Some("/src".into()),
            ..e.clone()
        });
        assert_eq!(r.find(Path::new("/b")).unwrap().path, PathBuf::from("/src"));
        assert_eq!(r.versioned().count(), 1);
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn a_second_store_of_a_directory_keeps_the_first() {
        let mut r = Registry::default();
        let at = |store: &str| RegEntry {
            path: "/src".into(),
            store: store.into(),
            name: "src-1".into(),
            alias_of: None,
            updated: None,
            incomplete: false,
            other_stores: Vec::new(),
            twins: Vec::new(),
        };
        r.insert(at("/usb1/__versions__"));
        r.insert(at("/usb2/__versions__"));
        r.insert(at("/usb2/__versions__"));
        let e = r.find(Path::new("/src")).unwrap();
        let stores: Vec<_> = e.per_store().into_iter().map(|e| e.store).collect();
        assert_eq!(
            stores,
            [
                PathBuf::from("/usb2/__versions__"),
                "/usb1/__versions__".into()
            ]
        );
        r.insert(at("/usb1/__versions__"));
        let e = r.find(Path::new("/src")).unwrap();
        assert_eq!(e.per_store().len(), 2);
        assert_eq!(e.store, PathBuf::from("/usb1/__versions__"));
    }
}

/// The history of `dir` in `store`, read from the store itself: the one whose latest
/// version names `dir`, else, in the store at the top of `dir` (a BACKUP's), the newest
/// history there (the directory `dir` backs up).
fn discover(dir: &Path, store: &Path) -> Option<RegEntry> {
    let mut found = crate::store::histories_in(store);
    found.sort_by(|x, y| y.1.made.cmp(&x.1.made));
    let own = found.iter().find(|(_, h)| h.dir == dir);
    let backed_up = found
        .first()
        .filter(|_| store == dir.join(engine::names::VERSIONS_DIR));
    let (name, head) = own.or(backed_up)?;
    Some(RegEntry {
        path: head.dir.clone(),
        store: store.to_path_buf(),
        name: name.clone(),
        alias_of: None,
        updated: Some(head.made.clone()),
        incomplete: head.incomplete,
        other_stores: Vec::new(),
        twins: Vec::new(),
    })
}
