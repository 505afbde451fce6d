//! The LINSTOR REST client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Auth, ClientBuilder};
use crate::error::{ConfigError, Error, Reports, Result, chain};
use crate::json_array::{ArraySplitter, FeedError, SplitError};
use crate::models::{
    ApiCallRc, ControllerVersion, Node, NodeEvacuate, NodeModify, NodeRestore, Resource, ResourceDefinition,
    ResourceDefinitionModify, ResourceWithVolumes, VolumeDefinitionModify,
};

/// Filter of [`Client::list_nodes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFilter {
    /// Only these nodes (empty: all).
    pub nodes: Vec<String>,
    /// Only nodes with these properties: `KEY=VALUE`, or `KEY` for "has the key".
    pub props: Vec<String>,
}

/// Filter of [`Client::view_resources`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceViewFilter {
    /// Only resources on these nodes (empty: all).
    pub nodes: Vec<String>,
    /// Only these resources (empty: all).
    pub resources: Vec<String>,
}

/// Filter of [`Client::list_resource_definitions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceDefinitionFilter {
    /// Only these resource definitions (empty: all).
    pub resource_definitions: Vec<String>,
    /// Only definitions with these properties: `KEY=VALUE`, or `KEY`.
    pub props: Vec<String>,
    /// Include the volume definitions.
    pub with_volume_definitions: bool,
}

/// Async client of the LINSTOR controller REST API (v1).
///
/// Cheap to clone; clones share connections and the choice of controller. With several
/// controllers, a connection failure makes the client try the next one, and it stays with the
/// first that answers.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    bases: Vec<Url>,
    current: AtomicUsize,
    auth: Option<HeaderValue>,
    timeout: Duration,
}

/// The bytes a path segment keeps as they are: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Builds `/v1/...` with percent-encoded path segments.
fn path(segments: &[&str]) -> String {
    let mut out = String::from("/v1");
    for s in segments {
        out.push('/');
        out.extend(utf8_percent_encode(s, SEGMENT));
    }
    out
}

/// Decodes a JSON body; on failure, reports the JSON path of the failing element.
pub fn decode_json<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T> {
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(first) => {
            let de = &mut serde_json::Deserializer::from_slice(body);
            let (path, message) = match serde_path_to_error::deserialize::<_, T>(de) {
                Err(e) => (e.path().to_string(), e.into_inner().to_string()),
                Ok(_) => (".".to_owned(), first.to_string()),
            };
            Err(Error::Decode {
                endpoint: endpoint.to_owned(),
                path,
                message,
            })
        }
    }
}

/// Decodes an error body leniently: an `ApiCallRc` list, or a single `ApiCallRc`.
pub fn decode_reports(body: &[u8]) -> Option<Vec<ApiCallRc>> {
    if let Ok(list) = serde_json::from_slice::<Vec<ApiCallRc>>(body) {
        return Some(list);
    }
    serde_json::from_slice::<ApiCallRc>(body).ok().map(|rc| vec![rc])
}

fn body_excerpt(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    Some(text.into_owned())
}

impl ClientBuilder {
    /// Checks the configuration and builds the client.
    pub fn build(self) -> Result<Client, ConfigError> {
        if let Some(e) = self.pending_error {
            return Err(e);
        }
        let bases = self.controller_urls()?;
        let tls = self.tls_config(&bases)?;
        let auth = match &self.auth {
            Auth::None => None,
            Auth::Basic { username, password } => {
                let raw = format!("{username}:{password}");
                let mut v =
                    HeaderValue::from_str(&format!("Basic {}", BASE64.encode(raw))).map_err(|_| {
                        ConfigError::InvalidVar {
                            var: "LS_USERNAME/LS_PASSWORD".to_owned(),
                            reason: "not usable in an HTTP header".to_owned(),
                        }
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
            Auth::Bearer(token) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    ConfigError::InvalidVar {
                        var: "LS_BEARER_TOKEN_FILE".to_owned(),
                        reason: "the token is not usable in an HTTP header".to_owned(),
                    }
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .user_agent(self.user_agent.clone())
            .connect_timeout(self.connect_timeout)
            .no_proxy()
            .build()
            .map_err(|e| ConfigError::HttpClient(chain(&e)))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                bases,
                current: AtomicUsize::new(0),
                auth,
                timeout: self.timeout,
            }),
        })
    }
}

impl Client {
    /// A builder with defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A client configured from the process environment (`LS_*` variables).
    pub fn from_env() -> Result<Client, ConfigError> {
        ClientBuilder::from_env()?.build()
    }

    /// The controller base URLs, in the order they are tried.
    pub fn controllers(&self) -> &[Url] {
        &self.inner.bases
    }

    /// The controller currently used (the last one that answered).
    pub fn current_controller(&self) -> &Url {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.bases.len().max(1);
        &self.inner.bases[i]
    }

    /// Sends one request, trying the controllers in turn on connection failures.
    /// Returns the response (status and headers read) and the URL of the controller.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<(reqwest::Response, Url)> {
        let endpoint = format!("{method} {path}");
        let n = self.inner.bases.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut attempts = Vec::new();
        for k in 0..n {
            let idx = (start + k) % n;
            let base = &self.inner.bases[idx];
            let url_text = format!("{}{}", base.as_str().trim_end_matches('/'), path);
            let mut url = Url::parse(&url_text).map_err(|e| Error::Transfer {
                endpoint: endpoint.clone(),
                url: url_text.clone(),
                message: format!("bad request URL: {e}"),
            })?;
            if !query.is_empty() {
                url.query_pairs_mut().extend_pairs(query.iter());
            }
            let mut req = self
                .inner
                .http
                .request(method.clone(), url)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(auth) = &self.inner.auth {
                req = req.header(AUTHORIZATION, auth.clone());
            }
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let fut = req.timeout(self.inner.timeout).send();
            let result = tokio::time::timeout(self.inner.timeout, fut).await;
            match result {
                Err(_) => {
                    return Err(Error::Timeout {
                        endpoint,
                        url: base.to_string(),
                        timeout: self.inner.timeout,
                    });
                }
                Ok(Ok(resp)) => {
                    if idx != start % n {
                        tracing::info!(controller = %base, "switched to LINSTOR controller");
                    }
                    self.inner.current.store(idx, Ordering::Relaxed);
                    return Ok((resp, base.clone()));
                }
                Ok(Err(e)) if e.is_timeout() => {
                    if e.is_connect() {
                        attempts.push(format!("{base}: connect timeout"));
                        continue;
                    }
                    return Err(Error::Timeout {
                        endpoint,
                        url: base.to_string(),
                        timeout: self.inner.timeout,
                    });
                }
                Ok(Err(e)) if e.is_connect() => {
                    tracing::debug!(controller = %base, error = %chain(&e), "cannot connect to LINSTOR controller");
                    attempts.push(format!("{base}: {}", chain(&e)));
                }
                Ok(Err(e)) => {
                    if n > 1 && e.is_request() {
                        // The connection broke before an answer: another controller may answer.
                        attempts.push(format!("{base}: {}", chain(&e)));
                        continue;
                    }
                    return Err(Error::Transfer {
                        endpoint,
                        url: base.to_string(),
                        message: chain(&e),
                    });
                }
            }
        }
        Err(Error::Connection { endpoint, attempts })
    }

    /// Sends a request and returns the body of a successful answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Bytes> {
        let endpoint = format!("{method} {path}");
        let (resp, base) = self.send(method, path, query, body).await?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.body_error(&endpoint, &base, &e))?;
        check_status(&endpoint, status, &bytes)?;
        Ok(bytes)
    }

    /// The error for an answer whose body could not be read.
    fn body_error(&self, endpoint: &str, base: &Url, e: &reqwest::Error) -> Error {
        if e.is_timeout() {
            Error::Timeout {
                endpoint: endpoint.to_owned(),
                url: base.to_string(),
                timeout: self.inner.timeout,
            }
        } else {
            Error::Transfer {
                endpoint: endpoint.to_owned(),
                url: base.to_string(),
                message: chain(e),
            }
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        let body = self.call(Method::GET, path, query, None).await?;
        decode_json(&format!("GET {path}"), &body)
    }

    /// Gets a list answer and decodes its elements one by one as they
    /// arrive, calling `each` with every one: the whole answer is never
    /// held. Returns the answer's size in bytes. On an error, `each` may
    /// have seen part of the list.
    async fn get_each<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        mut each: impl FnMut(T),
    ) -> Result<u64> {
        let endpoint = format!("GET {path}");
        let (mut resp, base) = self.send(Method::GET, path, query, None).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp
                .bytes()
                .await
                .map_err(|e| self.body_error(&endpoint, &base, &e))?;
            // Not a success: this fails with the status and LINSTOR's reports.
            return check_status(&endpoint, status, &body).map(|()| 0);
        }
        let mut splitter = ArraySplitter::new();
        let (mut index, mut bytes) = (0usize, 0u64);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.body_error(&endpoint, &base, &e))?
        {
            bytes += chunk.len() as u64;
            let fed = splitter.feed(&chunk, |element| {
                let decoded = decode_json::<T>(&endpoint, element).map_err(|error| match error {
                    Error::Decode {
                        endpoint,
                        path,
                        message,
                    } => Error::Decode {
                        endpoint,
                        path: element_path(index, &path),
                        message,
                    },
                    other => other,
                })?;
                index += 1;
                each(decoded);
                Ok(())
            });
            match fed {
                Ok(()) => {}
                Err(FeedError::Element(error)) => return Err(error),
                Err(FeedError::Split(error)) => return Err(split_error(&endpoint, &error)),
            }
        }
        splitter
            .finish()
            .map_err(|error| split_error(&endpoint, &error))?;
        Ok(bytes)
    }

    async fn put_json<B: Serialize>(&self, path: &str, req: &B) -> Result<Vec<ApiCallRc>> {
        let payload = serde_json::to_vec(req).map_err(|e| Error::Decode {
            endpoint: format!("PUT {path}"),
            path: "(request)".to_owned(),
            message: e.to_string(),
        })?;
        let body = self
            .call(Method::PUT, path, &[], Some(Bytes::from(payload)))
            .await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        decode_json(&format!("PUT {path}"), &body)
    }

    /// Lists nodes (`GET /v1/nodes`), optionally filtered by names and properties.
    pub async fn list_nodes(&self, filter: &NodeFilter) -> Result<Vec<Node>> {
        let mut q: Vec<(&str, &str)> = Vec::new();
        q.extend(filter.nodes.iter().map(|n| ("nodes", n.as_str())));
        q.extend(filter.props.iter().map(|p| ("props", p.as_str())));
        self.get_json("/v1/nodes", &q).await
    }

    /// Gets one node by name (`GET /v1/nodes?nodes=NAME`); [`Error::NotFound`] if it does not exist.
    pub async fn get_node(&self, name: &str) -> Result<Node> {
        let nodes: Vec<Node> = self.get_json("/v1/nodes", &[("nodes", name)]).await?;
        nodes
            .into_iter()
            .find(|n| n.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| Error::NotFound {
                endpoint: format!("GET /v1/nodes?nodes={name}"),
                reports: Reports(vec![ApiCallRc {
                    ret_code: ApiCallRc::MASK_ERROR,
                    message: format!("Node '{name}' not found."),
                    ..Default::default()
                }]),
            })
    }

    /// Sets and deletes node properties (`PUT /v1/nodes/{node}`).
    pub async fn modify_node(&self, node: &str, modify: &NodeModify) -> Result<Vec<ApiCallRc>> {
        self.put_json(&path(&["nodes", node]), modify).await
    }

    /// Starts evacuating a node (`PUT /v1/nodes/{node}/evacuate`).
    pub async fn evacuate_node(&self, node: &str, opts: &NodeEvacuate) -> Result<Vec<ApiCallRc>> {
        self.put_json(&path(&["nodes", node, "evacuate"]), opts).await
    }

    /// Restores an evacuated or evicted node (`PUT /v1/nodes/{node}/restore`).
    pub async fn restore_node(&self, node: &str, opts: &NodeRestore) -> Result<Vec<ApiCallRc>> {
        self.put_json(&path(&["nodes", node, "restore"]), opts).await
    }

    /// Lists resources with their volumes (`GET /v1/view/resources`).
    pub async fn view_resources(&self, filter: &ResourceViewFilter) -> Result<Vec<ResourceWithVolumes>> {
        let mut resources = Vec::new();
        self.view_resources_each(filter, |resource| resources.push(resource))
            .await?;
        Ok(resources)
    }

    /// Streams the resource view (`GET /v1/view/resources`): decodes each
    /// resource as `T` as it arrives (a type with only the fields the caller
    /// reads decodes fastest; unknown fields are skipped) and calls `each`
    /// with it, so the answer is never held whole. Returns its size in bytes.
    pub async fn view_resources_each<T: DeserializeOwned>(
        &self,
        filter: &ResourceViewFilter,
        each: impl FnMut(T),
    ) -> Result<u64> {
        let mut q: Vec<(&str, &str)> = Vec::new();
        q.extend(filter.nodes.iter().map(|n| ("nodes", n.as_str())));
        q.extend(filter.resources.iter().map(|r| ("resources", r.as_str())));
        self.get_each("/v1/view/resources", &q, each).await
    }

    /// Lists the resources of one resource definition
    /// (`GET /v1/resource-definitions/{resource}/resources`).
    pub async fn list_resources(&self, resource_definition: &str) -> Result<Vec<Resource>> {
        self.get_json(
            &path(&["resource-definitions", resource_definition, "resources"]),
            &[],
        )
        .await
    }

    /// Lists resource definitions (`GET /v1/resource-definitions`).
    pub async fn list_resource_definitions(
        &self,
        filter: &ResourceDefinitionFilter,
    ) -> Result<Vec<ResourceDefinition>> {
        let mut definitions = Vec::new();
        self.list_resource_definitions_each(filter, |definition| definitions.push(definition))
            .await?;
        Ok(definitions)
    }

    /// Streams the resource definitions (`GET /v1/resource-definitions`) as
    /// [`Self::view_resources_each`] streams resources. Returns the answer's
    /// size in bytes.
    pub async fn list_resource_definitions_each<T: DeserializeOwned>(
        &self,
        filter: &ResourceDefinitionFilter,
        each: impl FnMut(T),
    ) -> Result<u64> {
        let mut q: Vec<(&str, &str)> = Vec::new();
        q.extend(
            filter
                .resource_definitions
                .iter()
                .map(|n| ("resource_definitions", n.as_str())),
        );
        q.extend(filter.props.iter().map(|p| ("props", p.as_str())));
        if filter.with_volume_definitions {
            q.push(("with_volume_definitions", "true"));
        }
        self.get_each("/v1/resource-definitions", &q, each).await
    }

    /// Sets and deletes resource-definition properties (`PUT /v1/resource-definitions/{resource}`).
    pub async fn modify_resource_definition(
        &self,
        resource_definition: &str,
        modify: &ResourceDefinitionModify,
    ) -> Result<Vec<ApiCallRc>> {
        self.put_json(&path(&["resource-definitions", resource_definition]), modify)
            .await
    }

    /// Sets and deletes volume-definition properties
    /// (`PUT /v1/resource-definitions/{resource}/volume-definitions/{volume_number}`).
    pub async fn modify_volume_definition(
        &self,
        resource_definition: &str,
        volume_number: i32,
        modify: &VolumeDefinitionModify,
    ) -> Result<Vec<ApiCallRc>> {
        let vnr = volume_number.to_string();
        self.put_json(
            &path(&[
                "resource-definitions",
                resource_definition,
                "volume-definitions",
                &vnr,
            ]),
            modify,
        )
        .await
    }

    /// Version of the controller (`GET /v1/controller/version`).
    pub async fn controller_version(&self) -> Result<ControllerVersion> {
        self.get_json("/v1/controller/version", &[]).await
    }
}

/// The JSON path of `path` inside element `index` of a list.
fn element_path(index: usize, path: &str) -> String {
    match path {
        "." | "" => format!("[{index}]"),
        _ if path.starts_with('[') => format!("[{index}]{path}"),
        _ => format!("[{index}].{path}"),
    }
}

fn split_error(endpoint: &str, error: &SplitError) -> Error {
    Error::Decode {
        endpoint: endpoint.to_owned(),
        path: ".".to_owned(),
        message: error.to_string(),
    }
}

fn check_status(endpoint: &str, status: StatusCode, body: &[u8]) -> Result<()> {
    if status.is_success() {
        return Ok(());
    }
    let reports = decode_reports(body);
    if status == StatusCode::NOT_FOUND {
        return Err(Error::NotFound {
            endpoint: endpoint.to_owned(),
            reports: Reports(reports.unwrap_or_default()),
        });
    }
    let excerpt = if reports.is_none() {
        body_excerpt(body)
    } else {
        None
    };
    Err(Error::Status {
        endpoint: endpoint.to_owned(),
        status: status.as_u16(),
        reports: Reports(reports.unwrap_or_default()),
        body: excerpt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path(&["nodes", "a b/c"]), "/v1/nodes/a%20b%2Fc");
        assert_eq!(path(&["nodes", "node-1.x"]), "/v1/nodes/node-1.x");
    }

    #[test]
    fn decode_errors_name_the_json_path() {
        let body = br#"[{"name":"a","type":"SATELLITE"},{"name":"b","net_interfaces":[{"name":"d","address":"x","satellite_port":"oops"}]}]"#;
        let e = decode_json::<Vec<Node>>("GET /v1/nodes", body).unwrap_err();
        match e {
            Error::Decode { endpoint, path, .. } => {
                assert_eq!(endpoint, "GET /v1/nodes");
                assert_eq!(path, "[1].net_interfaces[0].satellite_port");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn error_bodies_decode_as_list_or_single() {
        let l = decode_reports(br#"[{"ret_code":-1,"message":"m"}]"#).unwrap();
        assert_eq!(l[0].message, "m");
        let s = decode_reports(br#"{"ret_code":-1,"message":"s"}"#).unwrap();
        assert_eq!(s[0].message, "s");
        assert!(decode_reports(b"<html>").is_none());
    }
}
