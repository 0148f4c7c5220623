//! One binary, three services: `sse-orders` started under the name `order-api` or
//! `stream-gateway` (a link, as in the container image) is that service, with its own flags.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use order_events::testing::ChildLog;

/// A directory holding links named `order-api` and `stream-gateway` to the built binary.
struct Links {
    dir: PathBuf,
}

impl Links {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("sse-orders-links-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["order-api", "stream-gateway"] {
            let link = dir.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sse-orders"), &link).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn output(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_started_as_a_service_is_that_service() {
    let links = Links::new();
    let (ok, help) = output(&links.path("order-api"), &["--help"]);
    assert!(ok && help.contains("Usage: order-api"), "{help}");
    assert!(
        !help.contains("--heartbeat-interval"),
        "order-api has no stream flags: {help}"
    );
    let (ok, help) = output(&links.path("stream-gateway"), &["--help"]);
    assert!(
        ok && help.contains("Usage: stream-gateway") && help.contains("--heartbeat-interval"),
        "{help}"
    );
    // A flag of the other service is refused, naming the service.
    let (ok, refused) = output(&links.path("order-api"), &["--heartbeat-interval", "5s"]);
    assert!(
        !ok && refused.contains("--heartbeat-interval") && refused.contains("order-api"),
        "{refused}"
    );
    let (ok, help) = output(Path::new(env!("CARGO_BIN_EXE_sse-orders")), &["--help"]);
    assert!(ok && help.contains("Usage: sse-orders"), "{help}");

    // Each serves its own routes: order-api takes orders and has no stream; the gateway
    // streams and takes no orders.
    let client = reqwest::Client::new();
    let order = serde_json::json!({
        "customerId": "c", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]
    });
    for name in ["order-api", "stream-gateway"] {
        let mut child = Command::new(links.path(name))
            .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--auth", "none"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (addr, log) = ChildLog::follow(&mut child, false);
        let _service = Service(child);
        assert!(log.contains(&format!("{name} listening")), "{name} names itself");
        let created = client
            .post(format!("http://{addr}/api/order"))
            .json(&order)
            .send()
            .await
            .unwrap()
            .status();
        let stream = client
            .get(format!("http://{addr}/api/order/stream"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap()
            .status();
        match name {
            "order-api" => assert_eq!((created.as_u16(), stream.as_u16()), (201, 404), "{name}"),
            _ => assert_eq!((created.as_u16(), stream.as_u16()), (404, 200), "{name}"),
        }
    }
}
