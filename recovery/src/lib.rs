//! The versioned recovery store, as a library `oneway` and `twoway` call and the
//! `recovery` binary sits on: each directory's history of versions and the content they
//! need ([`history`], kept by [`store`] under a retention policy ([`retention`])),
//! found through the registry ([`registry`]), restored ([`restore`]), listed and
//! verified ([`inspect`]). [`manifest`] reads the earlier layout's versions.

pub mod browse;
pub mod cli;
pub mod history;
pub mod inspect;
pub mod manifest;
pub mod registry;
pub mod restore;
pub mod retention;
mod slots;
pub mod store;
