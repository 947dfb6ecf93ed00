//! Helpers shared by the crate's unit tests.

/// True when running as root; otherwise prints a skip (or panics under RBUILD_REQUIRE_ROOT=1).
pub(crate) fn root_or_skip(name: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("RBUILD_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{name} needs root and RBUILD_REQUIRE_ROOT=1 is set");
    }
    eprintln!("SKIPPED {name}: needs root (RBUILD_REQUIRE_ROOT=1 makes this a failure)");
    false
}
