//! The sync engine shared by `oneway`, `twoway` and `recovery`.
//!
//! Data flows one way: [`scan`] reads a replica into a [`tree::Tree`], the planners
//! ([`mirror`]) turn trees into a plan, [`apply`] carries a plan out through the safe
//! primitives of [`fsops`] (the only writer), and the caller records the result (stat
//! [`cache`], store, registry). [`hash`] computes file and directory SHA-256s,
//! [`logging`], [`signal`], [`config`] and [`runner`] are the shared edges of every binary.

pub mod alloc_tune;
pub mod apply;
pub mod cache;
pub mod cli;
pub mod config;
pub mod entries;
pub mod error;
pub mod fsops;
pub mod hash;
pub mod home;
pub mod logging;
pub mod mirror;
pub mod names;
pub mod pathser;
pub mod record;
pub mod replica;
pub mod runner;
pub mod scan;
pub mod signal;
pub mod tree;

pub use error::{exit, Error, Refusal};

/// What each binary does first in `main`, while it has one thread: fixes glibc's mmap
/// threshold ([`alloc_tune::settle`], which may re-execute the binary) and grows the
/// descriptor table ([`fsops::reserve_descriptors`]).
pub fn prepare_process() {
    alloc_tune::settle();
    fsops::reserve_descriptors();
}
pub use tree::{Digest, Entry, Kind, MTime, Owner, Tree};
