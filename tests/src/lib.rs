//! The test kit every integration test uses: temp environments with their own data home,
//! the real binaries, trees built from short descriptions and read back as maps, and
//! tree comparison. Tests never touch the real home directory.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// The path of a binary of the workspace, built (once per test process) so that the
/// tests never run a stale binary: `cargo test` does not rebuild other packages' binaries.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf();
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "--quiet", "--bins", "--workspace"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        if let Some(target_dir) = dir.parent() {
            c.arg("--target-dir").arg(target_dir);
        }
        c.current_dir(env!("CARGO_MANIFEST_DIR"));
        let status = c.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bins failed");
    });
    let p = dir.join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// A temporary working area with its own data home.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("twoway-test-")
            .tempdir()
            .expect("temp dir");
        fs::create_dir(dir.path().join("home")).unwrap();
        Env { dir }
    }

    /// Gives the whole environment to the unprivileged user `nobody` (for tests that run
    /// the binaries through [`unprivileged`]).
    pub fn hand_to_nobody(&self) {
        chmod(self.dir.path(), 0o755);
        give_to_nobody(self.dir.path());
    }

    /// A path inside the environment.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// SOURCE (`src`, not made yet) and an empty BACKUP (`dst`) for a mirror.
    pub fn src_and_dst(&self) -> (PathBuf, PathBuf) {
        let (src, dst) = (self.path("src"), self.path("dst"));
        std::fs::create_dir_all(&dst).unwrap();
        (src, dst)
    }

    /// The versions of `dir` as `recovery list --json` gives them, newest first.
    pub fn versions_of(&self, dir: &Path) -> Vec<serde_json::Value> {
        let run = self.run("recovery", [Path::new("list"), dir, Path::new("--json")]);
        run.expect(0);
        let v: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
        v["dirs"][0]["versions"].as_array().unwrap().clone()
    }

    /// The data home the binaries use.
    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// The sync state file of the one pair this environment's twoway has synced.
    pub fn sync_state(&self) -> PathBuf {
        fs::read_dir(self.home().join("state"))
            .expect("a sync state directory")
            .next()
            .expect("a sync state")
            .expect("a sync state")
            .path()
    }

    /// A command for binary `name` with `TWOWAY_HOME` set to this environment's home.
    /// A pass reads its replicas compact wherever it may end before its trees are
    /// whole, as it does for trees of 100,000 files and more, and walks them four paths
    /// at a time; a first pass into an empty replica fills it three paths a turn: the
    /// tests' trees are small, and would otherwise never take the path large trees
    /// take, nor span more than one window or turn.
    pub fn cmd(&self, name: &str) -> Command {
        let mut c = Command::new(bin(name));
        c.env("TWOWAY_HOME", self.home())
            .env("TWOWAY_COMPACT_FROM", "0")
            .env("TWOWAY_WINDOW", "4")
            .env("TWOWAY_TURN", "3")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", self.path("no-home"));
        c
    }

    /// Runs binary `name` with `args` and returns its output.
    pub fn run<I, S>(&self, name: &str, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run(self.cmd(name).args(args).output().expect("run binary"))
    }

    /// `recovery restore DIR --version VERSION --to TO` with extra args.
    pub fn restore_to(&self, dir: &Path, version: &str, to: &Path, extra: &[&str]) -> Run {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("restore"),
            dir.as_os_str(),
            OsStr::new("--version"),
            OsStr::new(version),
            OsStr::new("--to"),
            to.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        self.run("recovery", args)
    }

    /// `oneway SOURCE BACKUP --once` with extra args.
    pub fn oneway(&self, src: &Path, dst: &Path, extra: &[&str]) -> Run {
        let mut args: Vec<&OsStr> = vec![src.as_os_str(), dst.as_os_str(), OsStr::new("--once")];
        args.extend(extra.iter().map(OsStr::new));
        self.run("oneway", args)
    }
}

/// A finished run.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }
    /// Asserts that the pass hashed no file (every hash came from a cache or a copy).
    pub fn expect_hashed_nothing(&self) -> &Self {
        assert!(
            self.all().contains("hashed 0 files"),
            "the pass hashed files:\n{}",
            self.all()
        );
        self
    }
    /// Asserts the exit status, showing the output if it differs.
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "exit status\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    /// The 64-hex value after `label` (e.g. "SOURCE sha256 ") in the output.
    pub fn value_after(&self, label: &str) -> Option<String> {
        let out = self.stdout();
        let i = out.rfind(label)? + label.len();
        Some(
            out[i..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit())
                .collect(),
        )
    }
}

/// What a test compares of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snap {
    File {
        sha256: String,
        mode: u32,
        mtime: (i64, i64),
    },
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    Symlink {
        target: PathBuf,
        mtime: (i64, i64),
    },
    Other,
}

/// Reads a tree back as `path → Snap` (the root itself is ""), leaving out `__versions__`
/// at the top.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Snap> {
    snapshot_with(root, true)
}

/// Like [`snapshot`], with or without directory mtimes.
pub fn snapshot_with(root: &Path, dir_mtimes: bool) -> BTreeMap<PathBuf, Snap> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let md = fs::symlink_metadata(&abs).unwrap();
        let mtime = (md.mtime(), md.mtime_nsec());
        let mode = md.permissions().mode() & 0o7777;
        let ft = md.file_type();
        let snap = if ft.is_symlink() {
            Snap::Symlink {
                target: fs::read_link(&abs).unwrap(),
                mtime,
            }
        } else if ft.is_dir() {
            for e in fs::read_dir(&abs).unwrap() {
                let e = e.unwrap();
                // The store and the lock file at the top are the tool's own.
                if rel.as_os_str().is_empty()
                    && (e.file_name() == "__versions__" || e.file_name() == ".twoway-lock")
                {
                    continue;
                }
                stack.push(rel.join(e.file_name()));
            }
            Snap::Dir {
                mode,
                mtime: if dir_mtimes { mtime } else { (0, 0) },
            }
        } else if ft.is_file() {
            Snap::File {
                sha256: sha256_file(&abs),
                mode,
                mtime,
            }
        } else {
            Snap::Other
        };
        out.insert(rel, snap);
    }
    out
}

/// Asserts two trees are the same, naming the first difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    for (p, x) in &sa {
        match sb.get(p) {
            None => panic!(
                "{} is in {} but not in {}",
                p.display(),
                a.display(),
                b.display()
            ),
            Some(y) => assert_eq!(x, y, "{} differs", p.display()),
        }
    }
    for p in sb.keys() {
        assert!(
            sa.contains_key(p),
            "{} is in {} but not in {}",
            p.display(),
            b.display(),
            a.display()
        );
    }
}

/// Runs `recovery verify` and checks it found no damage, and nothing missing but the
/// content in `taken_by_hand` (SHA-256s, hex): a version's content that the user
/// replaced or deleted by hand in every live directory that held it before a pass
/// could keep it (the newest versions' files are the live ones).
pub fn assert_verified_but(
    env: &Env,
    taken_by_hand: &std::collections::BTreeSet<String>,
    what: &str,
) {
    let verify = env.run("recovery", ["verify"]);
    for line in verify.stdout().lines() {
        let by_hand =
            line.starts_with("MISSING") && taken_by_hand.iter().any(|h| line.contains(h.as_str()));
        assert!(
            !line.starts_with("DAMAGED") && (!line.starts_with("MISSING") || by_hand),
            "{what}: {line}"
        );
    }
    assert!(
        verify.stdout().contains("verified"),
        "{what}: {}",
        verify.all()
    );
}

/// Runs `recovery verify` over every store the data home knows and checks that it found
/// nothing damaged or missing.
pub fn assert_verified(env: &Env) {
    let verify = env.run("recovery", ["verify"]);
    verify.expect(0);
    assert!(
        verify.stdout().contains(" 0 problems"),
        "{}",
        verify.stdout()
    );
}

/// SHA-256 of a file, hex.
pub fn sha256_file(p: &Path) -> String {
    let bytes = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    hex::encode(Sha256::digest(&bytes))
}

/// Writes `bytes` to `p`, creating parents.
pub fn write(p: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, bytes).unwrap();
}

/// Sets a path's mtime (not following symlinks).
pub fn set_mtime(p: &Path, secs: i64, nsec: u32) {
    filetime::set_symlink_file_times(
        p,
        filetime::FileTime::from_unix_time(secs, nsec),
        filetime::FileTime::from_unix_time(secs, nsec),
    )
    .unwrap();
}

/// Sets permission bits.
pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A path from raw bytes (for names that are not UTF-8).
pub fn raw(base: &Path, name: &[u8]) -> PathBuf {
    base.join(OsStr::from_bytes(name))
}

/// A small deterministic random generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// Writes a file of `len` pseudo-random bytes without holding it all in memory.
pub fn write_random(p: &Path, len: usize, rng: &mut Rng) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    let mut f = std::io::BufWriter::new(fs::File::create(p).unwrap());
    let mut left = len;
    while left > 0 {
        let n = left.min(1 << 20);
        f.write_all(&rng.bytes(n)).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}

/// Replaces `p` with `len` new random bytes the way careful editors save: a new file
/// renamed over the old one (an in-place write would also change every hard link,
/// including a version's).
pub fn replace_random(p: &Path, len: usize, rng: &mut Rng) {
    let tmp = p.with_file_name(format!(
        "{}.editor-save",
        p.file_name().unwrap().to_string_lossy()
    ));
    write_random(&tmp, len, rng);
    fs::rename(&tmp, p).unwrap();
}

/// A tree of `files` small files in nested directories, for kill and volume tests.
pub fn make_many(root: &Path, files: usize, max_size: usize, rng: &mut Rng) {
    for i in 0..files {
        let p = root.join(format!("d{}/e{}/f{i}.bin", i % 7, i % 13));
        let len = rng.below(max_size as u64) as usize;
        write_random(&p, len, rng);
    }
}

/// Starts `cmd` with its output discarded, kills it with SIGKILL after `after`, and
/// says whether it was still running then (cut short) rather than already finished.
/// A running binary that is killed when this is dropped: a test that fails while it
/// runs does not leave it behind (a first sync of a terabyte would go on for hours).
pub struct Running(Option<std::process::Child>);

impl Running {
    pub fn new(child: std::process::Child) -> Running {
        Running(Some(child))
    }

    /// Waits for the binary to end and takes its output.
    pub fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        self.0
            .take()
            .expect("BUG: a Running holds its child until now")
            .wait_with_output()
    }
}

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().expect("BUG: a Running holds its child")
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("BUG: a Running holds its child")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn kill_after(mut cmd: Command, after: std::time::Duration) -> bool {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(after);
    let _ = child.kill();
    child.wait().expect("wait").code().is_none()
}

/// True when running as root (then permission tests must drop privileges).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The one rule for tests that need root (to hand files to another user, or to keep
/// owners): they run as root, as CI does, and fail with this message otherwise, never
/// report a success they did not check.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (CI runs as root): it hands files to other users"
    );
}

/// Makes `p` and everything below it owned by `nobody` (uid/gid 65534).
pub fn give_to_nobody(p: &Path) {
    require_root();
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(p)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A command that runs binary `name` as the unprivileged user `nobody` when we are root.
pub fn unprivileged(env: &Env, name: &str) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin(name))
            .env("TWOWAY_HOME", env.home())
            .env("HOME", env.path("no-home"));
        c
    } else {
        env.cmd(name)
    }
}

/// Every path under `root` whose name starts with the tool's temporary prefix.
pub fn temp_leftovers(root: &Path) -> Vec<PathBuf> {
    snapshot(root)
        .into_keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b".twoway-tmp-"))
        })
        .collect()
}

/// The coreutils pipeline of the SPEC for a directory SHA-256.
pub fn coreutils_dir_sha(dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum | sed 's|  \\./|  |' | sha256sum")
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// True if some regular file under `dir` (a store) holds exactly `bytes`.
pub fn store_holds(dir: &Path, bytes: &[u8]) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => store_holds(&p, bytes),
            Ok(t) if t.is_file() => std::fs::read(&p).is_ok_and(|b| b == bytes),
            _ => false,
        }
    })
}

/// Random edits on one replica: new files, edits saved as editors do (a new file renamed
/// over), deletions of files and of whole directories, new directories, renames of files
/// and directories, a file turned into a directory and back, new symlinks.
pub fn random_edits(root: &Path, rng: &mut Rng, serial: &mut u32) {
    const NAMES: [&str; 7] = ["a", "b", "d e", "ü", "x.txt", "y.md", "z"];
    let listing = |kind_dir: bool| -> Vec<PathBuf> {
        snapshot(root)
            .into_iter()
            .filter(|(p, s)| {
                !p.as_os_str().is_empty()
                    && match s {
                        Snap::Dir { .. } => kind_dir,
                        Snap::File { .. } => !kind_dir,
                        _ => false,
                    }
            })
            .map(|(p, _)| root.join(p))
            .collect()
    };
    let pick = |v: &[PathBuf], rng: &mut Rng| v[rng.below(v.len() as u64) as usize].clone();
    let mut content = |rng: &mut Rng| {
        *serial += 1;
        format!("content {serial} ").repeat(1 + rng.below(40) as usize)
    };
    for _ in 0..rng.below(5) {
        let (files, dirs) = (listing(false), listing(true));
        let parent = if !dirs.is_empty() && rng.below(10) < 7 {
            pick(&dirs, rng)
        } else {
            root.to_path_buf()
        };
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        let free = |p: &Path| fs::symlink_metadata(p).is_err();
        match rng.below(13) {
            0 | 1 => {
                let p = parent.join(name);
                if free(&p) {
                    write(&p, content(rng));
                }
            }
            2 | 3 if !files.is_empty() => {
                let p = pick(&files, rng);
                let tmp = p.with_file_name("editor-save.tmp");
                write(&tmp, content(rng));
                fs::rename(&tmp, &p).unwrap();
            }
            4 if !files.is_empty() => fs::remove_file(pick(&files, rng)).unwrap(),
            5 if !dirs.is_empty() => fs::remove_dir_all(pick(&dirs, rng)).unwrap(),
            6 => {
                let p = parent.join(format!("{name}_d"));
                if free(&p) {
                    fs::create_dir_all(&p).unwrap();
                }
            }
            7 if !files.is_empty() => {
                let to = parent.join(name);
                if free(&to) {
                    fs::rename(pick(&files, rng), to).unwrap();
                }
            }
            8 if !dirs.is_empty() => {
                let from = pick(&dirs, rng);
                let to = root.join(format!("{name}_m"));
                if free(&to) && !to.starts_with(&from) {
                    fs::rename(from, to).unwrap();
                }
            }
            9 if !files.is_empty() => {
                let p = pick(&files, rng);
                fs::remove_file(&p).unwrap();
                write(&p.join("in"), content(rng));
            }
            10 => {
                let p = parent.join(format!("{name}_l"));
                if free(&p) {
                    let targets = ["x.txt", "../a", "nowhere"];
                    std::os::unix::fs::symlink(targets[rng.below(3) as usize], p).unwrap();
                }
            }
            // Edits in place, as editors, shells and databases make them: the same
            // inode rewritten, or appended to.
            11 if !files.is_empty() => {
                let p = pick(&files, rng);
                fs::write(&p, content(rng)).unwrap();
            }
            12 if !files.is_empty() => {
                use std::io::Write;
                let p = pick(&files, rng);
                let more = content(rng);
                fs::OpenOptions::new()
                    .append(true)
                    .open(&p)
                    .and_then(|mut f| f.write_all(more.as_bytes()))
                    .unwrap();
            }
            _ => {}
        }
    }
}

/// The files (path → SHA-256) of a tree, or of a version's tree without its manifest.
pub fn files_of(root: &Path) -> std::collections::BTreeSet<(PathBuf, String)> {
    snapshot(root)
        .into_iter()
        .filter_map(|(p, s)| match s {
            Snap::File { sha256, .. } if !p.ends_with(".twoway-manifest") => Some((p, sha256)),
            _ => None,
        })
        .collect()
}

/// A filesystem of its own (`ext4`, `xfs` or `btrfs`) in a sparse image file, loop-mounted
/// at `dir`: for a store on another filesystem, a second drive, reflinks, and a disk that
/// fills up. Unmounted, its loop device detached and its image removed when dropped,
/// whatever the test did. Needs root, as CI runs.
pub struct Mounted {
    pub dir: PathBuf,
    image: PathBuf,
    device: String,
}

impl Mounted {
    /// A new `kind` filesystem of `mib` MiB (xfs needs 300 at least, btrfs 114), its
    /// image at `at.img`, mounted at `at` (made here).
    pub fn new(kind: &str, mib: u64, at: &Path) -> Mounted {
        require_root();
        // Loop devices are set up one at a time in this process, and a busy one (another
        // test binary took it first) is tried again.
        static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = SETUP.lock().unwrap_or_else(|e| e.into_inner());
        let image = at.with_extension("img");
        fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        // As the kernel names a loop device's backing file.
        let image = fs::canonicalize(&image).unwrap();
        let quiet: &[&str] = match kind {
            "ext4" => &["-q", "-F"],
            "xfs" => &["-q", "-f"],
            "btrfs" => &["-q", "-f"],
            other => panic!("no filesystem {other} in the test kit"),
        };
        let mkfs = format!("mkfs.{kind}");
        let made = Command::new(&mkfs).args(quiet).arg(&image).output();
        let made = made.unwrap_or_else(|e| {
            panic!("{mkfs}: {e} (.ci/run installs e2fsprogs, xfsprogs and btrfs-progs)")
        });
        assert!(
            made.status.success(),
            "{mkfs}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let mut device = String::new();
        for _ in 0..10 {
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&image)
                .output()
                .unwrap();
            if out.status.success() {
                device = String::from_utf8_lossy(&out.stdout).trim().to_string();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(
            !device.is_empty(),
            "no free loop device for {}",
            image.display()
        );
        let mounted = Mounted {
            dir: at.to_path_buf(),
            image,
            device,
        };
        // A new loop device may start read-only here.
        let rw = Command::new("blockdev")
            .args(["--setrw", &mounted.device])
            .status()
            .unwrap();
        assert!(rw.success(), "blockdev --setrw {}", mounted.device);
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .arg(&mounted.device)
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {} on {}: {}",
            mounted.device,
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        mounted
    }

    /// A path inside the mounted filesystem.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Free bytes on the filesystem.
    pub fn free_bytes(&self) -> u64 {
        let s = rustix::fs::statvfs(&self.dir).unwrap();
        s.f_bavail * s.f_frsize
    }

    /// Unmounts it, keeping its device (a drive unplugged): [`plug_at`](Self::plug_at)
    /// mounts it again.
    /// (A process still working there keeps it busy a moment: tried again meanwhile.)
    pub fn unplug(&self) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !Command::new("umount")
            .arg(&self.dir)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            assert!(
                std::time::Instant::now() < until,
                "umount {}",
                self.dir.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Mounts it (unplugged) at `dir`, which must exist.
    pub fn plug_at(&mut self, dir: &Path) {
        let done = Command::new("mount")
            .arg(&self.device)
            .arg(dir)
            .status()
            .unwrap();
        assert!(done.success(), "mount {} on {}", self.device, dir.display());
        self.dir = dir.to_path_buf();
    }

    /// Unmounts now (a drive unplugged); dropping it afterwards does nothing more.
    pub fn unmount(&mut self) {
        if self.device.is_empty() {
            return;
        }
        let done = Command::new("umount").arg(&self.dir).status();
        if !done.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        // Only the device that still holds this image: never another test's.
        let name = self.device.trim_start_matches("/dev/");
        let backing = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"));
        if backing.is_ok_and(|b| Path::new(b.trim()) == self.image) {
            let _ = Command::new("losetup").args(["-d", &self.device]).status();
        }
        let _ = fs::remove_file(&self.image);
        self.device.clear();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}
