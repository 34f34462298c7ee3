//! Copying a stream while hashing it: every byte a copy writes is hashed on the way, so
//! a file is read once. Shared by the writers (temporary files) and the readers
//! ([`crate::hash`]), and imports neither.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::tree::Digest;

const BUF: usize = 256 * 1024;

/// Why a hashing copy stopped.
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
    Stopped,
}

/// Copies `reader` to `writer`, hashing the bytes on the way; checks `stop` between chunks.
pub fn copy_hashing(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<(Digest, u64), CopyError> {
    thread_local! {
        // One buffer per thread: zeroing 256 KiB for every small file costs more than
        // copying it.
        static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; BUF]);
    }
    BUFFER.with(|b| copy_with(reader, writer, stop, &mut b.borrow_mut()))
}

/// The test suite's `TWOWAY_INJECT_FAULT=copy-waits-for-stop`: a copy larger than one
/// buffer waits there until the run is told to stop, so that a test's Ctrl+C always
/// meets a copy in flight, however fast the machine (the copy then stops, as it would).
fn wait_for_stop(stop: &dyn Fn() -> bool) {
    while !stop() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn copy_with(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    stop: &dyn Fn() -> bool,
    buf: &mut [u8],
) -> Result<(Digest, u64), CopyError> {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        if stop() {
            return Err(CopyError::Stopped);
        }
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
        if n == buf.len() && crate::fs::injected_fault("copy-waits-for-stop") {
            wait_for_stop(stop);
        }
    }
    Ok((Digest(hasher.finalize().into()), total))
}
