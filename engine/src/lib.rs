//! The sync engine shared by `oneway`, `twoway` and `recovery`.
//!
//! A pass flows one way, and the folders are named after its stages and the services
//! they use (ARCHITECTURE.md at the top of the repository has the map):
//!
//! - [`scan`] reads a replica into a [`tree::Tree`] (walk, stat cache, hashes): it only
//!   reads;
//! - [`plan`] turns trees into a plan: pure functions, no I/O;
//! - [`apply`] carries a plan out, writing only through [`fs`];
//! - the caller records the result (stat caches, sync state, versions).
//!
//! [`pass`] runs those stages in order for `oneway` and `twoway`, each of which supplies
//! its planner, refusals and summary words.
//!
//! Services: [`fs`], the safe file primitives and the only writer; [`hash`], file and
//! directory SHA-256s; [`parallel`], the one way work runs in parallel; [`filter`], which
//! paths a pass leaves out; [`tree`], the data every stage passes on and its encodings;
//! [`run`], what every binary shares at its edges (arguments, config, logging, signals,
//! the pass loop, the data home, process setup).

pub mod apply;
pub mod error;
pub mod filter;
pub mod fs;
pub mod hash;
pub mod names;
pub mod parallel;
pub mod pass;
pub mod plan;
pub mod run;
pub mod scan;
pub mod tree;

pub use error::{exit, Error, Refusal};
pub use tree::{Digest, Entry, Kind, MTime, Owner, Tree};
