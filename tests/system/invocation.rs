//! One binary, three services: `sse-orders` started under the name `order-api` or
//! `stream-gateway` (a link, as in the container image) is that service, with its own flags.

use std::path::Path;
use std::process::Command;

use crate::helpers::{ChildService, ScratchDir};

/// A directory holding links named `order-api` and `stream-gateway` to the built binary.
fn links() -> ScratchDir {
    let dir = ScratchDir::new("links");
    for name in ["order-api", "stream-gateway"] {
        let link = dir.path(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sse-orders"), &link).unwrap();
    }
    dir
}

fn output(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn the_binary_started_as_a_service_is_that_service() {
    let links = links();
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
        let mut command = Command::new(links.path(name));
        command.args(["--auth", "none"]);
        let service = ChildService::spawn(command);
        let (addr, log) = (service.addr, &service.log);
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
