//! A service run as a child process: the address it listens on and its log, read from the JSON
//! lines it writes to stdout.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Child;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

/// The log lines a child has written so far.
#[derive(Clone, Default)]
pub struct ChildLog {
    lines: Arc<Mutex<Vec<String>>>,
}

impl ChildLog {
    /// Starts reading `child`'s stdout (a `--log-format json` service) and waits up to 20 s for
    /// the line that names the address it listens on. With `echo`, every line is also written
    /// to stderr.
    pub fn follow(child: &mut Child, echo: bool) -> (SocketAddr, ChildLog) {
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let log = ChildLog::default();
        let lines = log.lines.clone();
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("{line}");
                }
                let address = found.as_ref().and_then(|_| {
                    let entry = serde_json::from_str::<Value>(&line).ok()?;
                    entry["fields"]["address"].as_str()?.parse::<SocketAddr>().ok()
                });
                // Kept before the address is handed over: the caller may look for this line.
                lines.lock().expect("log lock").push(line);
                if let Some(addr) = address {
                    if let Some(sender) = found.take() {
                        let _ = sender.send(addr);
                    }
                }
            }
        });
        let addr = address
            .recv_timeout(Duration::from_secs(20))
            .expect("the child reports the address it listens on");
        (addr, log)
    }

    /// Whether some line so far contains `text`.
    pub fn contains(&self, text: &str) -> bool {
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .any(|line| line.contains(text))
    }
}
