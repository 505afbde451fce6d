//! Error types of the client.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::models::ApiCallRc;

/// A list of [`ApiCallRc`] replies, displayed one after the other.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reports(pub Vec<ApiCallRc>);

impl Reports {
    /// The error replies among `replies` of a successful answer, as an
    /// error: LINSTOR can refuse inside a 2xx answer.
    pub fn errors_of(replies: Vec<ApiCallRc>) -> Result<(), Reports> {
        if replies.iter().any(ApiCallRc::is_error) {
            return Err(Reports(replies.into_iter().filter(ApiCallRc::is_error).collect()));
        }
        Ok(())
    }
}

impl fmt::Display for Reports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no error details in the reply");
        }
        for (i, rc) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{rc}")?;
        }
        Ok(())
    }
}

/// Errors in the client configuration (builder or environment).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable has an unusable value.
    #[error("environment variable {var}: {reason}")]
    InvalidVar {
        /// The variable.
        var: String,
        /// Why the value is unusable.
        reason: String,
    },
    /// A file named by the configuration could not be read.
    #[error("{var}: cannot read file {}: {source}", path.display())]
    UnreadableFile {
        /// The variable (or builder setting) naming the file.
        var: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A controller URL cannot be used.
    #[error("controller URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// TLS material (certificate, key, CA) is not usable.
    #[error("{source_name}: {reason}")]
    Tls {
        /// The variable, file or builder setting the material came from.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The platform's trust store, needed to verify https controllers when no CA is given, cannot
    /// be used (for example in an image without CA certificates).
    #[error(
        "platform trust store: {reason}; it is needed to verify the https LINSTOR controller(s) \
         {controllers} because neither LS_ROOT_CA nor LS_ROOT_CA_FILE is set: set one of them to the \
         controller's CA certificate (PEM), install CA certificates, or use http"
    )]
    TrustStore {
        /// The https controller URLs, comma-separated.
        controllers: String,
        /// Why the trust store cannot be used.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
}

/// Errors of LINSTOR API calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No controller could be reached.
    #[error("{endpoint}: cannot connect to any LINSTOR controller ({})", attempts.join("; "))]
    Connection {
        /// Method and path of the call.
        endpoint: String,
        /// One line per controller tried: URL and reason.
        attempts: Vec<String>,
    },
    /// The call did not complete in time.
    #[error("{endpoint}: no answer from {url} within {timeout:?}")]
    Timeout {
        /// Method and path of the call.
        endpoint: String,
        /// Controller that was asked.
        url: String,
        /// The configured request timeout.
        timeout: Duration,
    },
    /// The object does not exist (HTTP 404, or an empty answer to a lookup by name).
    #[error("{endpoint}: not found: {reports}")]
    NotFound {
        /// Method and path of the call.
        endpoint: String,
        /// Replies of the controller.
        reports: Reports,
    },
    /// The controller answered with an error status.
    #[error("{endpoint}: HTTP {status}: {reports}")]
    Status {
        /// Method and path of the call.
        endpoint: String,
        /// HTTP status code.
        status: u16,
        /// Decoded replies of the controller (empty if the body held none).
        reports: Reports,
        /// Start of the raw body when it was not an `ApiCallRc` list.
        body: Option<String>,
    },
    /// The controller answered with a success status but error replies:
    /// the change was refused.
    #[error("{endpoint}: refused: {reports}")]
    Refused {
        /// Method and path of the call.
        endpoint: String,
        /// The error replies.
        reports: Reports,
    },
    /// The answer could not be decoded.
    #[error("{endpoint}: cannot decode the answer at {path}: {message}")]
    Decode {
        /// Method and path of the call.
        endpoint: String,
        /// JSON path of the failing element (`.` for the whole document).
        path: String,
        /// The decoder's message.
        message: String,
    },
    /// Transfer failure after the connection was made (reset, broken body, ...).
    #[error("{endpoint}: transfer from {url} failed: {message}")]
    Transfer {
        /// Method and path of the call.
        endpoint: String,
        /// Controller that was asked.
        url: String,
        /// What failed.
        message: String,
    },
}

impl Error {
    /// Whether the error is a not-found answer.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// The controller's replies carried by the error, if any.
    pub fn reports(&self) -> &[ApiCallRc] {
        match self {
            Error::NotFound { reports, .. }
            | Error::Status { reports, .. }
            | Error::Refused { reports, .. } => &reports.0,
            _ => &[],
        }
    }
}

/// Result type of the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error's message followed by those of its causes (its `source()`
/// chain) that it does not already include, joined with `": "`: errors of
/// HTTP clients often say only "client error (Connect)" at the top.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("tcp connect error: Connection refused")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("listing PVs: tcp connect error: Connection refused")]
    struct Repeating(#[source] Inner);

    #[test]
    fn chain_adds_causes_not_yet_said() {
        assert_eq!(
            chain(&Outer(Inner)),
            "client error (Connect): tcp connect error: Connection refused"
        );
        assert_eq!(
            chain(&Repeating(Inner)),
            "listing PVs: tcp connect error: Connection refused"
        );
        assert_eq!(chain(&Inner), "tcp connect error: Connection refused");
    }
}
