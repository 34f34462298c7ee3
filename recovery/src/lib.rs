//! The versioned recovery store, as a library `oneway` and `twoway` call and the
//! `recovery` binary sits on: hard-link snapshot versions ([`store`]) described by
//! manifests ([`manifest`]), found through the registry ([`registry`]), restored
//! ([`restore`]), listed and verified ([`inspect`]).

pub mod cli;
pub mod inspect;
pub mod manifest;
pub mod registry;
pub mod restore;
mod slots;
mod snapshot;
pub mod store;
