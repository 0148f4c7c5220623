//! A JWKS served over https is fetched with the system's CA bundle (here a bundle named by
//! `SSL_CERT_FILE`, as OpenSSL and rustls-native-certs read it): a key set from a server whose
//! certificate chains to a trusted CA verifies tokens; the same server is refused when its CA
//! is not trusted, and tokens then get 503, never a pass.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::helpers::{ChildService, ScratchDir};

const JWKS: &str = include_str!("../../order-events/tests/fixtures/jwks.json");
const RSA_PRIVATE: &[u8] = include_bytes!("../../order-events/tests/fixtures/rsa-private.pem");

/// A test CA and a certificate it signed for 127.0.0.1, made with the `openssl` command.
fn make_certificates() -> ScratchDir {
    let dir = ScratchDir::new("jwks-tls");
    let dir_path = dir.path("");
    std::fs::write(
        dir.path("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &dir_path,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=sse-orders test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &dir_path,
        &[
            &["req"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        ]
        .concat(),
    );
    openssl(
        &dir_path,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    dir
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian package openssl) runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves the fixture JWKS over https on a port of its own until the test ends.
async fn serve_jwks_over_tls(certificates: &ScratchDir) -> String {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificates.path("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(certificates.path("server.key")).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake: nothing to serve.
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{JWKS}",
                    JWKS.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://127.0.0.1:{}/jwks.json", address.port())
}

/// `sse-orders` verifying tokens against `jwks_url`, trusting only `ca_bundle` when given.
fn spawn_with_jwks(jwks_url: &str, ca_bundle: Option<&Path>) -> ChildService {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sse-orders"));
    command
        .args(["--auth", "jwt", "--jwt-jwks-url", jwks_url])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some(bundle) = ca_bundle {
        command.env("SSL_CERT_FILE", bundle);
    }
    ChildService::spawn(command)
}

fn rs256_token() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-test".into());
    let claims = serde_json::json!({"sub": "tls-test", "scope": "orders:read:all", "iat": now, "exp": now + 600});
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap()).unwrap()
}

async fn stream_status(addr: std::net::SocketAddr, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}/api/order/stream"))
        .header("accept", "text/event-stream")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_over_https_is_trusted_through_the_ca_bundle_and_only_through_it() {
    let certificates = make_certificates();
    let url = serve_jwks_over_tls(&certificates).await;
    let token = rs256_token();

    // The keys are fetched before the service listens: the first stream is verified.
    let trusting = spawn_with_jwks(&url, Some(&certificates.path("ca.pem")));
    assert_eq!(
        stream_status(trusting.addr, &token).await,
        200,
        "a token signed by a JWKS key"
    );
    assert_eq!(stream_status(trusting.addr, "not-a-token").await, 401);

    // The same server with only the system's CAs, which do not include the test CA: no keys,
    // so tokens get 503 and a log line says why.
    let distrusting = spawn_with_jwks(&url, None);
    assert_eq!(
        stream_status(distrusting.addr, &token).await,
        503,
        "no key set was loaded"
    );
    assert!(
        distrusting.log.contains("cannot fetch the JWKS yet"),
        "the failed fetch is logged"
    );
}
