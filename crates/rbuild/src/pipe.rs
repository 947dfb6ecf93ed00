//! Closed pipes on standard output and error end rbuild quietly, as they end docker (a Go
//! program dies of SIGPIPE when fd 1 or 2 is a closed pipe): `rbuild images | head -1` exits
//! with status 141 (128 + SIGPIPE) and prints nothing more. Rust ignores SIGPIPE, so a write
//! to the closed pipe fails with EPIPE and `println!`/`eprintln!` panic; a panic hook turns
//! exactly those panics into the quiet exit. Other pipes and sockets keep failing with EPIPE
//! as errors (SIGPIPE stays ignored, so a dead credential helper cannot kill rbuild).

/// The exit status of a process ended by SIGPIPE, as the shell reports it.
pub const SIGPIPE_STATUS: i32 = 141;

/// True for the panic message of `println!`/`eprintln!` writing to a closed pipe.
fn is_closed_std_pipe(message: &str) -> bool {
    (message.starts_with("failed printing to stdout")
        || message.starts_with("failed printing to stderr"))
        && message.contains("Broken pipe")
}

/// Installs the panic hook that exits with [`SIGPIPE_STATUS`] when standard output or error is
/// a closed pipe (other panics report as before).
pub fn exit_quietly_on_closed_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if is_closed_std_pipe(message) {
            std::process::exit(SIGPIPE_STATUS);
        }
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_closed_standard_pipes_match() {
        assert!(is_closed_std_pipe(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(is_closed_std_pipe(
            "failed printing to stderr: Broken pipe (os error 32)"
        ));
        assert!(!is_closed_std_pipe(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_closed_std_pipe("index out of bounds"));
    }
}
