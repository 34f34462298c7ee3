//! Filesystem detection: what the filesystem under a root can keep (times, case, modes).

use rustix::fs::{self as rfs};

use super::root::Root;

/// What a filesystem can keep, as far as a sync must know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsTraits {
    /// Timestamps in steps of up to 2 s (FAT, exFAT).
    pub coarse_times: bool,
    /// Names that differ only in case are the same file (FAT, exFAT, SMB).
    pub folds_case: bool,
    /// Permission bits cannot be set (FAT, exFAT, SMB).
    pub no_modes: bool,
}

impl Root {
    /// What the filesystem this root lives on can keep.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    pub fn fs_traits(&self) -> FsTraits {
        const MSDOS: i64 = 0x4d44;
        const EXFAT: i64 = 0x2011_bab0;
        const SMB: [i64; 3] = [0x517b, 0xfe53_4d42, 0xff53_4d42];
        let magic = rfs::fstatfs(&*self.fd).ok().map(|s| s.f_type as i64);
        let fat = matches!(magic, Some(MSDOS) | Some(EXFAT));
        let smb = magic.is_some_and(|m| SMB.contains(&m));
        FsTraits {
            coarse_times: fat,
            folds_case: fat || smb,
            no_modes: fat || smb,
        }
    }
}
