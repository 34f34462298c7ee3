//! Process limits a pass depends on: the open-file limit, raised once, and how many
//! directory handles each root may keep.

/// The open-file limit, first raised from its soft value to the hard one (as the
/// runtimes of Go and Java do).
pub(super) fn open_file_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let mut lim = getrlimit(Resource::Nofile);
        let wanted = lim.maximum.unwrap_or(1 << 20).min(1 << 20);
        if lim.current.is_some_and(|c| c < wanted)
            && setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(wanted),
                    maximum: lim.maximum,
                },
            )
            .is_ok()
        {
            lim.current = Some(wanted);
        }
        lim.current.unwrap_or(1 << 20)
    })
}

/// The descriptors a pass may hold (directory handles, batches of unnamed files): the
/// size the descriptor table is grown to up front, and the open-file limit below which
/// unnamed files are not used.
pub(super) const DESCRIPTORS: u64 = 16_384;

/// Raises the open-file limit (see [`open_file_limit`]) and grows the process's table of
/// file descriptors to what a pass may hold ([`DESCRIPTORS`], or the limit). Call it
/// first in `main`, while the process has one thread: in a process with several, each
/// time the kernel grows the table it waits for an RCU grace period first, and every
/// thread that opens a file waits with it — 10 to 30 ms, with both cores idle, several
/// times in a pass that opens many files. Grown once now (by a descriptor numbered near
/// the top, closed at once), the table never needs to grow again.
pub fn reserve_descriptors() {
    let want = open_file_limit().min(DESCRIPTORS).saturating_sub(1);
    if want < 256 {
        return;
    }
    if let Ok(high) = rustix::io::fcntl_dupfd_cloexec(std::io::stderr(), want as i32) {
        drop(high);
    }
}

/// How many directory handles each [`Root`] keeps open. A pass may have a dozen roots
/// open at once (copy workers, both sides of a two-way sync, versions), so the open-file
/// limit is shared out: a sixty-fourth of it per root, between 16 and 1024.
pub(super) fn dir_cache_limit() -> usize {
    (open_file_limit() / 64).clamp(16, 1024) as usize
}
