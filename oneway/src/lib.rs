//! `oneway SOURCE BACKUP`: a one-way mirror with versions. The binary parses flags
//! ([`cli`]); a [`pass::Job`] runs the engine's scan → plan → apply → record.

pub mod cli;
pub mod pass;
