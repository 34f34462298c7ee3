//! Ctrl+C and SIGTERM: the first asks the running pass to stop after the file in flight
//! (which is finished or rolled back, never left half-written at its final name); a
//! second exits at once with status 130, still leaving only temporary files behind.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{exit, Refusal};

static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once per process).
pub fn install() -> Result<(), Refusal> {
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting now");
            std::process::exit(exit::INTERRUPTED);
        }
        eprintln!("interrupt: finishing the file in flight, then stopping (again to stop at once)");
    })
    .map_err(|e| Refusal::new(format!("cannot install the signal handler: {e}")))
}

/// True once a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
