//! Client configuration: controller URLs, TLS material, authentication, timeouts.
//!
//! [`ClientBuilder::from_env`] reads the environment understood by the Go LINSTOR client library:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `LS_CONTROLLERS` | comma-separated controller URLs (default `localhost`) |
//! | `LS_USER_CERTIFICATE`, `LS_USER_KEY`, `LS_ROOT_CA` | PEM text for mutual TLS |
//! | `LS_USER_CERTIFICATE_FILE`, `LS_USER_KEY_FILE`, `LS_ROOT_CA_FILE` | the same, as file paths |
//! | `LS_USERNAME`, `LS_PASSWORD` | HTTP basic authentication |
//! | `LS_BEARER_TOKEN_FILE` | file holding a bearer token, as text or as JSON `{"token": "..."}` |
//!
//! URL rules: a bare `host` or `host:port` is accepted; scheme `linstor://` (or none) means the
//! default scheme, `linstor+ssl://` means `https`; the default scheme is `https` when any TLS
//! variable is set, else `http`; the default port is 3370 for `http` and 3371 for `https`.
//! Empty variables count as unset; text variables take precedence over their `_FILE` forms.
//!
//! An `https` controller is verified with `LS_ROOT_CA[_FILE]` when set, else with the platform's
//! trust store, which is only read when some controller is `https`: a client of `http`
//! controllers works without any CA certificates installed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ConfigError;

/// Default port of a controller over plain HTTP.
pub const DEFAULT_HTTP_PORT: u16 = 3370;
/// Default port of a controller over HTTPS.
pub const DEFAULT_HTTPS_PORT: u16 = 3371;
/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default connect timeout (per controller).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `User-Agent`: `linstor-affinity-controller/<version>`.
pub fn default_user_agent() -> String {
    format!("linstor-affinity-controller/{}", env!("CARGO_PKG_VERSION"))
}

/// PEM material with the name of where it came from (variable, file or builder setting).
#[derive(Clone)]
pub(crate) struct PemSource {
    pub(crate) name: String,
    pub(crate) pem: Vec<u8>,
}

/// Authentication sent with every request.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// No authentication header.
    None,
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password (may be empty).
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// Builder of a [`crate::Client`].
///
/// Settings are checked in [`ClientBuilder::build`], which reports the first unusable one.
pub struct ClientBuilder {
    pub(crate) controllers: Vec<String>,
    pub(crate) controllers_source: String,
    pub(crate) client_cert: Option<PemSource>,
    pub(crate) client_key: Option<PemSource>,
    pub(crate) root_ca: Option<PemSource>,
    pub(crate) auth: Auth,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) user_agent: String,
    pub(crate) pending_error: Option<ConfigError>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            controllers: Vec::new(),
            controllers_source: "controllers".to_owned(),
            client_cert: None,
            client_key: None,
            root_ca: None,
            auth: Auth::None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            user_agent: default_user_agent(),
            pending_error: None,
        }
    }
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("controllers", &self.controllers)
            .field("client_cert", &self.client_cert.as_ref().map(|s| &s.name))
            .field("client_key", &self.client_key.as_ref().map(|s| &s.name))
            .field("root_ca", &self.root_ca.as_ref().map(|s| &s.name))
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

fn read_file(var: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::UnreadableFile {
        var: var.to_owned(),
        path: PathBuf::from(path),
        source,
    })
}

impl ClientBuilder {
    /// A builder with defaults: controller `localhost`, no TLS, no authentication,
    /// [`DEFAULT_TIMEOUT`], [`DEFAULT_CONNECT_TIMEOUT`], [`default_user_agent`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder configured from the process environment (see the module documentation).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_map(|k| std::env::var(k).ok())
    }

    /// A builder configured from the variables returned by `get` (see the module documentation).
    ///
    /// `get` returns the value of a variable, or `None` when unset; empty values count as unset.
    pub fn from_env_map(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let mut b = ClientBuilder::new();
        if let Some(list) = get("LS_CONTROLLERS") {
            b.controllers = split_controllers(&list);
            b.controllers_source = "LS_CONTROLLERS".to_owned();
        }
        let pem = |var: &str| -> Result<Option<PemSource>, ConfigError> {
            if let Some(text) = get(var) {
                return Ok(Some(PemSource {
                    name: var.to_owned(),
                    pem: text.into_bytes(),
                }));
            }
            let file_var = format!("{var}_FILE");
            if let Some(path) = get(&file_var) {
                let pem = read_file(&file_var, &path)?;
                return Ok(Some(PemSource {
                    name: format!("{file_var} ({path})"),
                    pem,
                }));
            }
            Ok(None)
        };
        b.client_cert = pem("LS_USER_CERTIFICATE")?;
        b.client_key = pem("LS_USER_KEY")?;
        b.root_ca = pem("LS_ROOT_CA")?;
        match (&b.client_cert, &b.client_key) {
            (Some(_), None) => {
                return Err(ConfigError::InvalidVar {
                    var: "LS_USER_KEY".to_owned(),
                    reason: "a client certificate is set (LS_USER_CERTIFICATE[_FILE]) but no key; set LS_USER_KEY or LS_USER_KEY_FILE".to_owned(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::InvalidVar {
                    var: "LS_USER_CERTIFICATE".to_owned(),
                    reason: "a client key is set (LS_USER_KEY[_FILE]) but no certificate; set LS_USER_CERTIFICATE or LS_USER_CERTIFICATE_FILE".to_owned(),
                });
            }
            _ => {}
        }
        let username = get("LS_USERNAME");
        let password = get("LS_PASSWORD");
        let token_file = get("LS_BEARER_TOKEN_FILE");
        match (username, password, token_file) {
            (Some(_), _, Some(_)) => {
                return Err(ConfigError::InvalidVar {
                    var: "LS_BEARER_TOKEN_FILE".to_owned(),
                    reason:
                        "both basic authentication (LS_USERNAME) and a bearer token are set; use only one"
                            .to_owned(),
                });
            }
            (None, Some(_), _) => {
                return Err(ConfigError::InvalidVar {
                    var: "LS_PASSWORD".to_owned(),
                    reason: "a password is set but LS_USERNAME is not".to_owned(),
                });
            }
            (Some(username), password, None) => {
                b.auth = Auth::Basic {
                    username,
                    password: password.unwrap_or_default(),
                };
            }
            (None, None, Some(path)) => {
                let raw = read_file("LS_BEARER_TOKEN_FILE", &path)?;
                b.auth = Auth::Bearer(parse_token_file(&path, &raw)?);
            }
            (None, None, None) => {}
        }
        Ok(b)
    }

    /// Sets the controller URLs, tried in order (see the module documentation for the rules).
    pub fn controllers<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.controllers = urls
            .into_iter()
            .map(|s| s.as_ref().trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        self.controllers_source = "controllers".to_owned();
        self
    }

    /// Sets the client certificate chain and private key (PEM) for mutual TLS.
    pub fn client_identity_pem(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.client_cert = Some(PemSource {
            name: "client certificate".to_owned(),
            pem: cert_pem.into(),
        });
        self.client_key = Some(PemSource {
            name: "client key".to_owned(),
            pem: key_pem.into(),
        });
        self
    }

    /// Reads the client certificate chain and private key (PEM) from files.
    pub fn client_identity_files(mut self, cert: &Path, key: &Path) -> Self {
        let c = std::fs::read(cert);
        let k = std::fs::read(key);
        match (c, k) {
            (Ok(c), Ok(k)) => {
                self.client_cert = Some(PemSource {
                    name: format!("client certificate file {}", cert.display()),
                    pem: c,
                });
                self.client_key = Some(PemSource {
                    name: format!("client key file {}", key.display()),
                    pem: k,
                });
            }
            (Err(source), _) => {
                self.pending_error.get_or_insert(ConfigError::UnreadableFile {
                    var: "client certificate".to_owned(),
                    path: cert.to_owned(),
                    source,
                });
            }
            (_, Err(source)) => {
                self.pending_error.get_or_insert(ConfigError::UnreadableFile {
                    var: "client key".to_owned(),
                    path: key.to_owned(),
                    source,
                });
            }
        }
        self
    }

    /// Sets the CA certificates (PEM) that verify the controller; without them the
    /// platform's trust store is used (for `https` controllers only).
    pub fn root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca = Some(PemSource {
            name: "root CA".to_owned(),
            pem: pem.into(),
        });
        self
    }

    /// Uses HTTP basic authentication.
    pub fn basic_auth(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Auth::Basic {
            username: username.into(),
            password: password.into(),
        };
        self
    }

    /// Sends `Authorization: Bearer <token>`.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Bearer(token.into());
        self
    }

    /// Sets the timeout of one request (the event stream only uses it until the answer starts).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the timeout of connecting to one controller.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the `User-Agent` header.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// The configured authentication.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The configured request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether any TLS material is configured (then the default scheme is `https`).
    pub fn has_tls_material(&self) -> bool {
        self.client_cert.is_some() || self.client_key.is_some() || self.root_ca.is_some()
    }

    /// The controller base URLs after applying the URL rules.
    pub fn controller_urls(&self) -> Result<Vec<Url>, ConfigError> {
        let https_default = self.has_tls_material();
        if self.controllers.is_empty() {
            return Ok(vec![parse_controller("localhost", https_default)?]);
        }
        self.controllers
            .iter()
            .map(|c| parse_controller(c, https_default))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| match e {
                ConfigError::InvalidUrl { url, reason } if self.controllers_source != "controllers" => {
                    ConfigError::InvalidVar {
                        var: self.controllers_source.clone(),
                        reason: format!("controller URL {url:?}: {reason}"),
                    }
                }
                other => other,
            })
    }

    /// Builds the rustls client configuration (ring provider) for the controllers `bases`.
    ///
    /// The CA is `LS_ROOT_CA[_FILE]` when set; else the platform's trust store, but only when some
    /// controller is `https` (a configuration without roots serves `http` controllers, and needs
    /// no CA certificates installed).
    pub(crate) fn tls_config(&self, bases: &[Url]) -> Result<rustls::ClientConfig, ConfigError> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::HttpClient(format!("TLS protocol versions: {e}")))?;
        let https: Vec<String> = bases
            .iter()
            .filter(|url| url.scheme() == "https")
            .map(Url::to_string)
            .collect();
        let builder = match &self.root_ca {
            Some(src) => {
                let certs = parse_certs(src)?;
                let mut roots = rustls::RootCertStore::empty();
                for c in certs {
                    roots.add(c).map_err(|e| ConfigError::Tls {
                        source_name: src.name.clone(),
                        reason: format!("unusable CA certificate: {e}"),
                    })?;
                }
                builder.with_root_certificates(roots)
            }
            None if https.is_empty() => builder.with_root_certificates(rustls::RootCertStore::empty()),
            None => {
                let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(|e| {
                    ConfigError::TrustStore {
                        controllers: https.join(", "),
                        reason: e.to_string(),
                    }
                })?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
            }
        };
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert_src), Some(key_src)) => {
                let certs = parse_certs(cert_src)?;
                let key = PrivateKeyDer::from_pem_slice(&key_src.pem).map_err(|e| ConfigError::Tls {
                    source_name: key_src.name.clone(),
                    reason: format!("no usable PEM private key: {}", pem_error(&e)),
                })?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| ConfigError::Tls {
                        source_name: format!("{} / {}", cert_src.name, key_src.name),
                        reason: format!("certificate and key do not form a usable identity: {e}"),
                    })?
            }
            (Some(src), None) | (None, Some(src)) => {
                return Err(ConfigError::Tls {
                    source_name: src.name.clone(),
                    reason: "a client certificate needs its private key and vice versa".to_owned(),
                });
            }
            (None, None) => builder.with_no_client_auth(),
        };
        Ok(config)
    }
}

fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM block of the right kind found".to_owned(),
        other => other.to_string(),
    }
}

fn parse_certs(src: &PemSource) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(&src.pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::Tls {
            source_name: src.name.clone(),
            reason: format!("bad PEM certificate: {}", pem_error(&e)),
        })?;
    if certs.is_empty() {
        return Err(ConfigError::Tls {
            source_name: src.name.clone(),
            reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) found".to_owned(),
        });
    }
    Ok(certs)
}

/// Reads a bearer token file: the JSON field `token` if the file is a JSON object holding it,
/// else the whole text (trimmed).
fn parse_token_file(path: &str, raw: &[u8]) -> Result<String, ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidVar {
        var: "LS_BEARER_TOKEN_FILE".to_owned(),
        reason: format!("file {path}: {reason}"),
    };
    let text = std::str::from_utf8(raw)
        .map_err(|_| bad("not UTF-8 text"))?
        .trim();
    let token = if text.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(&format!("invalid JSON: {e}")))?;
        match v.get("token") {
            Some(serde_json::Value::String(t)) => t.trim().to_owned(),
            Some(_) => return Err(bad("JSON field \"token\" is not a string")),
            None => return Err(bad("JSON object has no field \"token\"")),
        }
    } else {
        text.to_owned()
    };
    if token.is_empty() {
        return Err(bad("the token is empty"));
    }
    if token.chars().any(|c| c.is_control()) {
        return Err(bad("the token contains control characters"));
    }
    Ok(token)
}

fn split_controllers(list: &str) -> Vec<String> {
    list.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether the authority part (`[user@]host[:port]`) names a port.
fn has_explicit_port(authority: &str) -> bool {
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let after_host = match host_port.rfind(']') {
        Some(i) => &host_port[i + 1..],
        None => host_port,
    };
    match after_host.rfind(':') {
        Some(i) => !after_host[i + 1..].is_empty(),
        None => false,
    }
}

/// Applies the controller URL rules to one entry.
pub fn parse_controller(entry: &str, https_default: bool) -> Result<Url, ConfigError> {
    let bad = |reason: String| ConfigError::InvalidUrl {
        url: entry.to_owned(),
        reason,
    };
    let default_scheme = if https_default { "https" } else { "http" };
    let (scheme, rest) = match entry.split_once("://") {
        Some((s, rest)) => {
            let scheme = match s.to_ascii_lowercase().as_str() {
                "linstor" => default_scheme,
                "linstor+ssl" | "https" => "https",
                "http" => "http",
                other => {
                    return Err(bad(format!(
                        "unsupported scheme {other:?} (use http, https, linstor or linstor+ssl)"
                    )));
                }
            };
            (scheme, rest)
        }
        None => (default_scheme, entry),
    };
    if rest.is_empty() {
        return Err(bad("no host".to_owned()));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    if authority.is_empty() {
        return Err(bad("no host".to_owned()));
    }
    let mut url = Url::parse(&format!("{scheme}://{rest}")).map_err(|e| bad(e.to_string()))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".to_owned()));
    }
    if !has_explicit_port(authority) {
        let port = if scheme == "https" {
            DEFAULT_HTTPS_PORT
        } else {
            DEFAULT_HTTP_PORT
        };
        url.set_port(Some(port))
            .map_err(|()| bad("cannot set the port".to_owned()))?;
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("query or fragment not allowed".to_owned()));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_port_detection() {
        assert!(has_explicit_port("h:1"));
        assert!(!has_explicit_port("h"));
        assert!(!has_explicit_port("h:"));
        assert!(has_explicit_port("[::1]:80"));
        assert!(!has_explicit_port("[::1]"));
        assert!(has_explicit_port("u:p@h:8"));
        assert!(!has_explicit_port("u:p@h"));
    }

    #[test]
    fn explicit_default_http_port_is_kept() {
        let u = parse_controller("http://h:80", false).unwrap();
        assert_eq!(u.port_or_known_default(), Some(80));
    }

    #[test]
    fn http_controllers_need_no_trust_store_and_https_ones_are_named_when_it_fails() {
        let builder = ClientBuilder::new().controllers(["http://a", "b:3370"]);
        let bases = builder.controller_urls().unwrap();
        assert!(builder.tls_config(&bases).is_ok());
        let error = ConfigError::TrustStore {
            controllers: "https://c:3371/".to_owned(),
            reason: "No CA certificates were loaded from the system".to_owned(),
        }
        .to_string();
        assert!(
            error.starts_with("platform trust store: No CA certificates"),
            "{error}"
        );
        assert!(
            error.contains("https LINSTOR controller(s) https://c:3371/"),
            "{error}"
        );
        assert!(error.contains("LS_ROOT_CA nor LS_ROOT_CA_FILE"), "{error}");
    }

    #[test]
    fn token_file_forms() {
        assert_eq!(parse_token_file("f", b" abc \n").unwrap(), "abc");
        assert_eq!(parse_token_file("f", br#"{"token":"xyz","x":1}"#).unwrap(), "xyz");
        assert!(parse_token_file("f", b"{\"tok\":1}").is_err());
        assert!(parse_token_file("f", b"  ").is_err());
    }
}
