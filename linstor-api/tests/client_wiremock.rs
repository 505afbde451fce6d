//! Client behaviour against scripted HTTP answers: configuration rules, headers, failover,
//! error decoding, timeouts, and mutual TLS against the simulator's HTTPS listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{dead_port, env, pki};
use linstor_api::models::{NodeModify, VolumeDefinitionModify};
use linstor_api::sim::{SimState, SimTls, Simulator};
use linstor_api::{ClientBuilder, ConfigError, Error, NodeFilter, ResourceViewFilter};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn urls(vars: &[(&str, &str)]) -> Vec<String> {
    ClientBuilder::from_env_map(env(vars))
        .unwrap()
        .controller_urls()
        .unwrap()
        .into_iter()
        .map(|u| u.to_string())
        .collect()
}

#[test]
fn default_controller_is_localhost_over_http() {
    assert_eq!(urls(&[]), vec!["http://localhost:3370/"]);
    assert_eq!(urls(&[("LS_CONTROLLERS", "")]), vec!["http://localhost:3370/"]);
}

#[test]
fn bare_host_and_host_port() {
    assert_eq!(urls(&[("LS_CONTROLLERS", "ctrl")]), vec!["http://ctrl:3370/"]);
    assert_eq!(
        urls(&[("LS_CONTROLLERS", "ctrl:1234")]),
        vec!["http://ctrl:1234/"]
    );
    assert_eq!(
        urls(&[("LS_CONTROLLERS", "10.0.0.1")]),
        vec!["http://10.0.0.1:3370/"]
    );
    assert_eq!(
        urls(&[("LS_CONTROLLERS", "[fd00::1]")]),
        vec!["http://[fd00::1]:3370/"]
    );
    assert_eq!(
        urls(&[("LS_CONTROLLERS", "[fd00::1]:99")]),
        vec!["http://[fd00::1]:99/"]
    );
}

#[test]
fn linstor_schemes() {
    assert_eq!(
        urls(&[("LS_CONTROLLERS", "linstor://ctrl")]),
        vec!["http://ctrl:3370/"]
    );
    assert_eq!(
        urls(&[("LS_CONTROLLERS", "linstor+ssl://ctrl")]),
        vec!["https://ctrl:3371/"]
    );
    // An explicit port is kept (443 is the https default, so the URL omits it).
    assert_eq!(
        urls(&[("LS_CONTROLLERS", "linstor+ssl://ctrl:443")]),
        vec!["https://ctrl/"]
    );
    assert_eq!(
        urls(&[("LS_CONTROLLERS", "linstor+ssl://ctrl:8443")]),
        vec!["https://ctrl:8443/"]
    );
    assert_eq!(
        urls(&[("LS_CONTROLLERS", "https://ctrl")]),
        vec!["https://ctrl:3371/"]
    );
    assert_eq!(
        urls(&[("LS_CONTROLLERS", "http://ctrl:80")]),
        vec!["http://ctrl/"]
    );
    assert_eq!(
        urls(&[("LS_CONTROLLERS", "http://ctrl/linstor/")]),
        vec!["http://ctrl:3370/linstor"]
    );
}

#[test]
fn tls_variables_make_https_the_default_scheme() {
    let p = pki("env");
    let with_ca = |c: &str| urls(&[("LS_CONTROLLERS", c), ("LS_ROOT_CA", &p.ca_pem)]);
    assert_eq!(with_ca("ctrl"), vec!["https://ctrl:3371/"]);
    assert_eq!(with_ca("linstor://ctrl"), vec!["https://ctrl:3371/"]);
    assert_eq!(with_ca("ctrl:5000"), vec!["https://ctrl:5000/"]);
    // An explicit http scheme stays http.
    assert_eq!(with_ca("http://ctrl"), vec!["http://ctrl:3370/"]);
    // Any TLS variable counts, including the *_FILE forms.
    let dir = std::env::temp_dir().join(format!("linstor-api-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &p.ca_pem).unwrap();
    assert_eq!(
        urls(&[
            ("LS_CONTROLLERS", "ctrl"),
            ("LS_ROOT_CA_FILE", ca.to_str().unwrap())
        ]),
        vec!["https://ctrl:3371/"]
    );
    assert_eq!(
        urls(&[("LS_ROOT_CA_FILE", ca.to_str().unwrap())]),
        vec!["https://localhost:3371/"]
    );
    let cert = dir.join("c.pem");
    let key = dir.join("k.pem");
    std::fs::write(&cert, &p.client_cert_pem).unwrap();
    std::fs::write(&key, &p.client_key_pem).unwrap();
    assert_eq!(
        urls(&[
            ("LS_USER_CERTIFICATE_FILE", cert.to_str().unwrap()),
            ("LS_USER_KEY_FILE", key.to_str().unwrap())
        ]),
        vec!["https://localhost:3371/"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn several_controllers_in_order() {
    assert_eq!(
        urls(&[("LS_CONTROLLERS", " a , linstor+ssl://b:9,, http://c ")]),
        vec!["http://a:3370/", "https://b:9/", "http://c:3370/"]
    );
}

#[test]
fn bad_controller_urls_name_the_variable() {
    for bad in ["ftp://ctrl", "linstor://", "http://ctrl?x=1", "http://ctrl:99999"] {
        let e = ClientBuilder::from_env_map(env(&[("LS_CONTROLLERS", bad)]))
            .unwrap()
            .controller_urls()
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("LS_CONTROLLERS"), "{bad}: {text}");
        assert!(text.contains(bad.split('?').next().unwrap()), "{bad}: {text}");
    }
}

#[test]
fn incomplete_client_identity_is_rejected() {
    let p = pki("half");
    let e = ClientBuilder::from_env_map(env(&[("LS_USER_CERTIFICATE", &p.client_cert_pem)])).unwrap_err();
    assert!(
        matches!(&e, ConfigError::InvalidVar { var, .. } if var == "LS_USER_KEY"),
        "{e}"
    );
    let e = ClientBuilder::from_env_map(env(&[("LS_USER_KEY", &p.client_key_pem)])).unwrap_err();
    assert!(
        matches!(&e, ConfigError::InvalidVar { var, .. } if var == "LS_USER_CERTIFICATE"),
        "{e}"
    );
}

#[test]
fn unreadable_files_name_variable_and_path() {
    let missing = "/nonexistent/dir/ca.pem";
    let e = ClientBuilder::from_env_map(env(&[("LS_ROOT_CA_FILE", missing)])).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("LS_ROOT_CA_FILE") && text.contains(missing),
        "{text}"
    );
    let e = ClientBuilder::from_env_map(env(&[("LS_BEARER_TOKEN_FILE", missing)])).unwrap_err();
    assert!(e.to_string().contains("LS_BEARER_TOKEN_FILE"), "{e}");
}

#[test]
fn bad_pem_is_reported_with_its_source() {
    let e = ClientBuilder::from_env_map(env(&[("LS_ROOT_CA", "not a certificate")]))
        .unwrap()
        .build()
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("LS_ROOT_CA") && text.contains("PEM"), "{text}");

    let p = pki("badkey");
    let e = ClientBuilder::from_env_map(env(&[
        ("LS_USER_CERTIFICATE", &p.client_cert_pem),
        (
            "LS_USER_KEY",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ),
    ]))
    .unwrap()
    .build()
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("LS_USER_KEY"), "{text}");

    // A key that belongs to another certificate.
    let other = pki("other");
    let e = ClientBuilder::from_env_map(env(&[
        ("LS_USER_CERTIFICATE", &p.client_cert_pem),
        ("LS_USER_KEY", &other.client_key_pem),
    ]))
    .unwrap()
    .build()
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("LS_USER_CERTIFICATE") && text.contains("LS_USER_KEY"),
        "{text}"
    );
}

#[test]
fn conflicting_or_partial_auth_is_rejected() {
    let e = ClientBuilder::from_env_map(env(&[("LS_PASSWORD", "x")])).unwrap_err();
    assert!(e.to_string().contains("LS_USERNAME"), "{e}");
    let dir = std::env::temp_dir().join(format!("linstor-api-tok2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("token");
    std::fs::write(&f, "t").unwrap();
    let e = ClientBuilder::from_env_map(env(&[
        ("LS_USERNAME", "u"),
        ("LS_BEARER_TOKEN_FILE", f.to_str().unwrap()),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("LS_BEARER_TOKEN_FILE"), "{e}");
    std::fs::write(&f, "{\"nottoken\": 1}").unwrap();
    let e = ClientBuilder::from_env_map(env(&[("LS_BEARER_TOKEN_FILE", f.to_str().unwrap())])).unwrap_err();
    assert!(e.to_string().contains("token"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn client_for(server: &MockServer, extra: &[(&str, &str)]) -> linstor_api::Client {
    let uri = server.uri();
    let mut vars = vec![("LS_CONTROLLERS", uri.as_str())];
    vars.extend_from_slice(extra);
    ClientBuilder::from_env_map(env(&vars)).unwrap().build().unwrap()
}

#[tokio::test]
async fn basic_auth_and_user_agent_headers() {
    let server = MockServer::start().await;
    let ua = format!("linstor-affinity-controller/{}", env!("CARGO_PKG_VERSION"));
    Mock::given(method("GET"))
        .and(path("/v1/controller/version"))
        .and(header("authorization", "Basic dXNlcjpwYXNz"))
        .and(header("user-agent", ua.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"version": "1.2.3"})))
        .expect(1)
        .mount(&server)
        .await;
    let c = client_for(&server, &[("LS_USERNAME", "user"), ("LS_PASSWORD", "pass")]).await;
    let v = c.controller_version().await.unwrap();
    assert_eq!(v.version.as_deref(), Some("1.2.3"));
}

#[tokio::test]
async fn basic_auth_sends_standard_padded_base64_of_user_colon_password() {
    // Expected values computed independently; they cover zero, one and two padding characters,
    // the `+`/`/` end of the alphabet and non-ASCII (UTF-8) credentials.
    let cases = [
        ("Aladdin", "open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ("u", "??>???", "dTo/Pz4/Pz8="),
        ("\u{fc}", "p:w", "w7w6cDp3"),
        ("ab", "c", "YWI6Yw=="),
    ];
    for (user, password, encoded) in cases {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/controller/version"))
            .and(header("authorization", format!("Basic {encoded}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"version": "1"})))
            .expect(1)
            .mount(&server)
            .await;
        let c = client_for(&server, &[("LS_USERNAME", user), ("LS_PASSWORD", password)]).await;
        c.controller_version()
            .await
            .unwrap_or_else(|e| panic!("{user}:{password} not sent as {encoded}: {e}"));
    }
}

#[tokio::test]
async fn bearer_token_from_text_and_json_files() {
    let dir = std::env::temp_dir().join(format!("linstor-api-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = dir.join("plain");
    let json = dir.join("json");
    std::fs::write(&plain, "secret-one\n").unwrap();
    std::fs::write(&json, r#"{"token": "secret-two", "expires": 0}"#).unwrap();
    let server = MockServer::start().await;
    for tok in ["secret-one", "secret-two"] {
        Mock::given(method("GET"))
            .and(path("/v1/controller/version"))
            .and(header("authorization", format!("Bearer {tok}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"version": tok})))
            .expect(1)
            .mount(&server)
            .await;
    }
    for (file, tok) in [(&plain, "secret-one"), (&json, "secret-two")] {
        let c = client_for(&server, &[("LS_BEARER_TOKEN_FILE", file.to_str().unwrap())]).await;
        assert_eq!(
            c.controller_version().await.unwrap().version.as_deref(),
            Some(tok)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn fails_over_to_the_controller_that_answers_and_sticks_to_it() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/nodes"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!([{"name": "n1", "type": "SATELLITE"}])),
        )
        .expect(2)
        .mount(&server)
        .await;
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let list = format!("{dead},{}", server.uri());
    let c = ClientBuilder::from_env_map(env(&[("LS_CONTROLLERS", &list)]))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(c.current_controller().as_str().trim_end_matches('/'), dead);
    let nodes = c.list_nodes(&NodeFilter::default()).await.unwrap();
    assert_eq!(nodes[0].name, "n1");
    assert_eq!(
        c.current_controller().as_str().trim_end_matches('/'),
        server.uri()
    );
    // Next call goes straight to the working controller.
    c.list_nodes(&NodeFilter::default()).await.unwrap();
    assert_eq!(
        c.current_controller().as_str().trim_end_matches('/'),
        server.uri()
    );
}

#[tokio::test]
async fn all_controllers_down_is_a_connection_error_listing_each() {
    let a = format!("http://127.0.0.1:{}", dead_port());
    let b = format!("http://127.0.0.1:{}", dead_port());
    let c = ClientBuilder::new().controllers([&a, &b]).build().unwrap();
    let e = c.controller_version().await.unwrap_err();
    match &e {
        Error::Connection { attempts, endpoint } => {
            assert_eq!(attempts.len(), 2);
            assert_eq!(endpoint, "GET /v1/controller/version");
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains(&a[7..]) && text.contains(&b[7..]), "{text}");
}

#[tokio::test]
async fn error_status_decodes_api_call_rc_list() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/v1/nodes/n1"))
        .and(body_json(
            serde_json::json!({"override_props": {"Aux/a": "1"}, "delete_props": ["Aux/b"]}),
        ))
        .respond_with(ResponseTemplate::new(500).set_body_json(serde_json::json!([{
            "ret_code": -4611686018427386906i64,
            "message": "Modification failed",
            "cause": "the database is locked",
            "details": "node n1",
            "correction": "try again later",
            "error_report_ids": ["ABC-123"]
        }])))
        .mount(&server)
        .await;
    let c = client_for(&server, &[]).await;
    let m = NodeModify {
        override_props: [("Aux/a".to_owned(), "1".to_owned())].into(),
        delete_props: vec!["Aux/b".to_owned()],
        ..Default::default()
    };
    let e = c.modify_node("n1", &m).await.unwrap_err();
    match &e {
        Error::Status { status, reports, .. } => {
            assert_eq!(*status, 500);
            assert!(reports.0[0].is_error());
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = e.to_string();
    for part in [
        "PUT /v1/nodes/n1",
        "500",
        "Modification failed",
        "the database is locked",
        "node n1",
        "try again later",
        "ABC-123",
    ] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
}

#[tokio::test]
async fn not_found_and_non_json_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/resource-definitions/gone/resources"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            serde_json::json!([{"ret_code": -1, "message": "Resource definition 'gone' not found."}]),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/view/resources"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>bad gateway</html>"))
        .mount(&server)
        .await;
    let c = client_for(&server, &[]).await;
    let e = c.list_resources("gone").await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(e.to_string().contains("'gone' not found"), "{e}");
    let e = c
        .view_resources(&ResourceViewFilter::default())
        .await
        .unwrap_err();
    match &e {
        Error::Status {
            status: 502,
            reports,
            body,
            ..
        } => {
            assert!(reports.0.is_empty());
            assert_eq!(body.as_deref(), Some("<html>bad gateway</html>"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn get_node_not_found_when_list_is_empty() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/nodes"))
        .and(query_param("nodes", "ghost"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([])))
        .mount(&server)
        .await;
    let c = client_for(&server, &[]).await;
    assert!(c.get_node("ghost").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn decode_errors_name_endpoint_and_json_path() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/view/resources"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"[{"name":"r","node_name":"n","volumes":[{"volume_number":0},{"volume_number":"zero"}]}]"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/nodes"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("[{\"name\": ", "application/json"))
        .mount(&server)
        .await;
    let c = client_for(&server, &[]).await;
    match c
        .view_resources(&ResourceViewFilter::default())
        .await
        .unwrap_err()
    {
        Error::Decode { endpoint, path, .. } => {
            assert_eq!(endpoint, "GET /v1/view/resources");
            assert_eq!(path, "[0].volumes[1].volume_number");
        }
        other => panic!("unexpected {other:?}"),
    }
    match c.list_nodes(&NodeFilter::default()).await.unwrap_err() {
        Error::Decode { endpoint, .. } => assert_eq!(endpoint, "GET /v1/nodes"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn filters_become_repeated_query_parameters() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/nodes"))
        .and(query_param("nodes", "a"))
        .and(query_param("nodes", "b"))
        .and(query_param("props", "Aux/zone=z1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/view/resources"))
        .and(query_param("nodes", "a"))
        .and(query_param("resources", "pvc-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v1/resource-definitions/r%201/volume-definitions/3"))
        .and(body_json(serde_json::json!({"delete_props": ["Aux/x"]})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!([{"ret_code": 3, "message": "ok"}])),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client_for(&server, &[]).await;
    c.list_nodes(&NodeFilter {
        nodes: vec!["a".into(), "b".into()],
        props: vec!["Aux/zone=z1".into()],
    })
    .await
    .unwrap();
    c.view_resources(&ResourceViewFilter {
        nodes: vec!["a".into()],
        resources: vec!["pvc-1".into()],
    })
    .await
    .unwrap();
    let rc = c
        .modify_volume_definition(
            "r 1",
            3,
            &VolumeDefinitionModify {
                delete_props: vec!["Aux/x".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rc[0].message, "ok");
}

#[tokio::test]
async fn slow_answers_time_out() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/nodes"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!([]))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let c = ClientBuilder::new()
        .controllers([server.uri()])
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    match c.list_nodes(&NodeFilter::default()).await.unwrap_err() {
        Error::Timeout {
            endpoint, timeout, ..
        } => {
            assert_eq!(endpoint, "GET /v1/nodes");
            assert_eq!(timeout, Duration::from_millis(200));
        }
        other => panic!("unexpected {other:?}"),
    }
}

async fn tls_sim(p: &common::Pki) -> Simulator {
    Simulator::builder()
        .state(SimState::default())
        .no_http()
        .https(
            "127.0.0.1:0".parse().unwrap(),
            SimTls {
                cert_pem: p.server_cert_pem.clone().into_bytes(),
                key_pem: p.server_key_pem.clone().into_bytes(),
                client_ca_pem: Some(p.ca_pem.clone().into_bytes()),
            },
        )
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn mutual_tls_from_environment() {
    let p = pki("mtls");
    let sim = tls_sim(&p).await;
    let port = sim.https_addr().unwrap().port();
    // linstor+ssl:// with the PEM text variables.
    let ctl = format!("linstor+ssl://127.0.0.1:{port}");
    let c = ClientBuilder::from_env_map(env(&[
        ("LS_CONTROLLERS", &ctl),
        ("LS_USER_CERTIFICATE", &p.client_cert_pem),
        ("LS_USER_KEY", &p.client_key_pem),
        ("LS_ROOT_CA", &p.ca_pem),
    ]))
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(c.current_controller().scheme(), "https");
    let v = c.controller_version().await.unwrap();
    assert!(v.version.is_some());

    // Bare host:port with the *_FILE variables: https is the default scheme.
    let dir = std::env::temp_dir().join(format!("linstor-api-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cf, kf, caf) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("ca.pem"));
    std::fs::write(&cf, &p.client_cert_pem).unwrap();
    std::fs::write(&kf, &p.client_key_pem).unwrap();
    std::fs::write(&caf, &p.ca_pem).unwrap();
    let bare = format!("127.0.0.1:{port}");
    let c = ClientBuilder::from_env_map(env(&[
        ("LS_CONTROLLERS", &bare),
        ("LS_USER_CERTIFICATE_FILE", cf.to_str().unwrap()),
        ("LS_USER_KEY_FILE", kf.to_str().unwrap()),
        ("LS_ROOT_CA_FILE", caf.to_str().unwrap()),
    ]))
    .unwrap()
    .build()
    .unwrap();
    c.list_nodes(&NodeFilter::default()).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn mutual_tls_rejects_missing_or_foreign_client_certificates() {
    let p = pki("server");
    let stranger = pki("stranger");
    let sim = tls_sim(&p).await;
    let url = sim.https_url().unwrap();
    // No client certificate.
    let c = ClientBuilder::new()
        .controllers([&url])
        .root_ca_pem(p.ca_pem.clone())
        .build()
        .unwrap();
    let e = c.controller_version().await.unwrap_err();
    assert!(
        matches!(e, Error::Connection { .. } | Error::Transfer { .. }),
        "{e:?}"
    );
    // A client certificate from another CA.
    let c = ClientBuilder::new()
        .controllers([&url])
        .root_ca_pem(p.ca_pem.clone())
        .client_identity_pem(stranger.client_cert_pem.clone(), stranger.client_key_pem.clone())
        .build()
        .unwrap();
    assert!(c.controller_version().await.is_err());
    // The server is not trusted when the CA is another one.
    let c = ClientBuilder::new()
        .controllers([&url])
        .root_ca_pem(stranger.ca_pem.clone())
        .client_identity_pem(p.client_cert_pem.clone(), p.client_key_pem.clone())
        .build()
        .unwrap();
    assert!(c.controller_version().await.is_err());
    // The right material works.
    let c = ClientBuilder::new()
        .controllers([&url])
        .root_ca_pem(p.ca_pem.clone())
        .client_identity_pem(p.client_cert_pem.clone(), p.client_key_pem.clone())
        .build()
        .unwrap();
    c.controller_version().await.unwrap();
}
