//! `twoway DIR_A DIR_B`: two-way reconciliation that never loses an update. The
//! [`plan`] is a pure function of the last sync's [`state`] and the two scans; a
//! [`pass::Job`] runs the engine's scan → plan → apply → record on both replicas.

pub mod cli;
pub mod fold;
pub mod packed;
pub mod pass;
pub mod plan;
pub mod progress;
pub mod state;
