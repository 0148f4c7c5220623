//! A `redis-sentinel` per test, watching one private primary.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// A `redis-sentinel` watching one primary under the name `mymaster`; killed on drop.
pub struct Sentinel {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Sentinel {
    /// Whether Debian's `redis-sentinel` is installed.
    pub fn available() -> bool {
        Command::new("redis-sentinel")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Starts a sentinel monitoring the primary on `primary_port` and waits until it names it.
    pub fn start(primary_port: u16) -> Sentinel {
        Self::start_with(primary_port, "")
    }

    /// Like [`Sentinel::start`], declaring the primary down after `down_after` without an answer
    /// and failing over to a replica at once.
    pub fn start_failing_over_after(primary_port: u16, down_after: Duration) -> Sentinel {
        let ms = down_after.as_millis();
        Self::start_with(
            primary_port,
            &format!(
                "sentinel down-after-milliseconds mymaster {ms}\nsentinel failover-timeout mymaster {}\n",
                (ms * 4).max(2000)
            ),
        )
    }

    fn start_with(primary_port: u16, extra_config: &str) -> Sentinel {
        let dir = std::env::temp_dir().join(format!("sse-orders-sentinel-{}-{primary_port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sentinel directory");
        for _ in 0..5 {
            let port = free_port();
            let config = dir.join("sentinel.conf");
            // Sentinel rewrites its configuration file, so it lives in the test's directory.
            std::fs::write(
                &config,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {primary_port} 1\n{extra_config}",
                    dir.display()
                ),
            )
            .expect("sentinel directory");
            let child = Command::new("redis-sentinel")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-sentinel starts");
            let mut sentinel = Sentinel {
                child,
                port,
                dir: dir.clone(),
            };
            if sentinel.wait_until_it_names(primary_port) {
                return sentinel;
            }
            let _ = sentinel.child.kill();
            let _ = sentinel.child.wait();
        }
        panic!("redis-sentinel did not start");
    }

    fn wait_until_it_names(&mut self, primary_port: u16) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let output = Command::new("redis-cli")
                .args(["-p", &self.port.to_string()])
                .args(["SENTINEL", "get-master-addr-by-name", "mymaster"])
                .output();
            if output.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&primary_port.to_string())) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Runs one command against the sentinel through `redis-cli`.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The port of the server the sentinel currently names as primary.
    pub fn primary_port(&self) -> Option<u16> {
        let reply = self.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"]);
        reply.lines().nth(1)?.trim().parse().ok()
    }

    /// The URL fred connects through: the sentinel's address and the service name.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=mymaster",
            self.port
        )
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
