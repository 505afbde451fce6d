//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// PEM material of a test PKI: a CA, a server certificate for `localhost` and 127.0.0.1, a client certificate.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

pub fn pki(name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} client"));
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert_pem: server.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// An environment lookup backed by a map.
pub fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

/// A loopback port nobody listens on.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

/// An HTTP client for raw requests to the simulator's plain-HTTP listener.
pub fn plain_http() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
        .build()
        .unwrap()
}

/// A subscription to the simulator's node event stream (`GET /v1/events/nodes`), read as
/// server-sent events: blocks of `event:` and `data:` lines, each ended by an empty line.
pub struct NodeEvents {
    response: reqwest::Response,
    buffer: Vec<u8>,
    ready: std::collections::VecDeque<(String, String)>,
}

impl NodeEvents {
    /// Subscribes; the simulator accepted once this returns.
    pub async fn open(http: &reqwest::Client, base: &str) -> NodeEvents {
        let response = http.get(format!("{base}/v1/events/nodes")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        NodeEvents {
            response,
            buffer: Vec::new(),
            ready: std::collections::VecDeque::new(),
        }
    }

    /// The `content-type` of the stream.
    pub fn content_type(&self) -> Option<&str> {
        self.response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
    }

    /// The next event's name and data text, waiting up to 10 s for it.
    pub async fn next_raw(&mut self) -> (String, String) {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return event;
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event arrives")
                .unwrap()
                .expect("the event stream stays open");
            self.buffer.extend_from_slice(&chunk);
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(block).unwrap();
                let mut name = "message";
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.strip_prefix(' ').unwrap_or(v);
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if !data.is_empty() {
                    self.ready.push_back((name.to_owned(), data.join("\n")));
                }
            }
        }
    }

    /// The next event, decoded.
    pub async fn next(&mut self) -> linstor_api::models::NodeEvent {
        let (name, data) = self.next_raw().await;
        linstor_api::models::NodeEvent::decode(&name, &data)
            .unwrap_or_else(|e| panic!("event {name} does not decode: {e}: {data}"))
    }
}
