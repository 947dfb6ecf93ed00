//! A build-context fixture with every kind of entry the context checksum sees, with fixed
//! modes and owners (what counts) and arbitrary mtimes (what does not).

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::Path;

/// The `.dockerignore` lines of the fixture's context.
pub const EXCLUDES: &[&str] = &["**/*.log", "src/target"];

/// True when running as root (the fixture sets owners); otherwise prints a skip, or panics
/// under `RBUILD_REQUIRE_ROOT=1`.
pub fn root_or_skip(name: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("RBUILD_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{name} needs root and RBUILD_REQUIRE_ROOT=1 is set");
    }
    eprintln!(
        "SKIPPED {name}: needs root to set owners (RBUILD_REQUIRE_ROOT=1 makes this a failure)"
    );
    false
}

fn file(root: &Path, rel: &str, content: &str, mode: u32, owner: u32) {
    let path = root.join(rel);
    fs::write(&path, content).expect("write fixture file");
    // chown first: it clears setuid/setgid bits.
    lchown(&path, Some(owner), Some(owner)).expect("chown");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn dir(root: &Path, rel: &str, mode: u32, owner: u32) {
    let path = root.join(rel);
    fs::create_dir_all(&path).expect("mkdir");
    // chown first: it clears setuid/setgid bits.
    lchown(&path, Some(owner), Some(owner)).expect("chown");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Writes the fixture under `root` (which must exist):
///
/// ```text
/// src/                0755 1000:1000
/// src/main.c          0644 1000:1000  "int main(void) { return 0; }\n"
/// src/run.sh          4750 1000:1000  "#!/bin/sh\necho hi\n"  (setuid: the mode's high bits count)
/// src/link -> main.c       1000:1000
/// src/empty/          0700 1000:1000
/// src/debug.log       0644 1000:1000  (excluded by **/*.log)
/// src/target/junk.o   0644 1000:1000  (excluded by src/target)
/// README.md           0600 0:0        "fixture\n"
/// ```
pub fn context_fixture(root: &Path) {
    dir(root, "src", 0o755, 1000);
    file(
        root,
        "src/main.c",
        "int main(void) { return 0; }\n",
        0o644,
        1000,
    );
    file(root, "src/run.sh", "#!/bin/sh\necho hi\n", 0o4750, 1000);
    symlink("main.c", root.join("src/link")).expect("symlink");
    lchown(root.join("src/link"), Some(1000), Some(1000)).expect("chown link");
    dir(root, "src/empty", 0o700, 1000);
    file(root, "src/debug.log", "noise\n", 0o644, 1000);
    dir(root, "src/target", 0o755, 1000);
    file(root, "src/target/junk.o", "\x7fELF", 0o644, 1000);
    file(root, "README.md", "fixture\n", 0o600, 0);
    // Arbitrary mtimes: they never count.
    let when = std::time::SystemTime::now();
    for rel in ["src/main.c", "src/run.sh", "README.md"] {
        fs::File::options()
            .write(true)
            .open(root.join(rel))
            .and_then(|f| f.set_modified(when))
            .expect("set mtime");
    }
}
