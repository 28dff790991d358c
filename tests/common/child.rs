//! `ferry serve` as a child process, for tests that read what the binary writes.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// `ferry serve` in `dir` (its data directory too), with none of this process's
/// `FERRY_*`, `OTEL_*` or `RUST_LOG` variables, stdin and stdout closed and stderr
/// piped (read it with [`stderr_lines`]).
pub fn ferry_serve(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    for (key, _) in std::env::vars_os() {
        let text = key.to_string_lossy();
        if text.starts_with("FERRY_") || text.starts_with("OTEL_") || text == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir)
        .arg("serve")
        .env("FERRY_DATA_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// The lines `child` writes to stderr, read to the end on a thread of their own so
/// the pipe never fills.
pub fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
