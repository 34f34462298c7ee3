//! What every binary of the suite shares at its edges: process setup, the flags and the
//! config file, logging, `--json` events, signals, the pass loop and the data home. Nothing here reads or
//! writes a replica.

pub mod alloc_tune;
pub mod cli;
pub mod config;
pub mod events;
pub mod home;
pub mod logging;
pub mod runner;
pub mod signal;
pub mod watch;

/// What each binary does first in `main`, while it has one thread: fixes glibc's mmap
/// threshold ([`alloc_tune::settle`], which may re-execute the binary) and grows the
/// descriptor table ([`crate::fs::reserve_descriptors`]) before any thread starts;
/// then sizes the worker pool ([`crate::parallel::init`]).
pub fn prepare_process() {
    alloc_tune::settle();
    crate::fs::reserve_descriptors();
    crate::parallel::init();
}
