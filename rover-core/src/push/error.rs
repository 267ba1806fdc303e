//! Errors of the exporter's configuration: every one is found when the
//! exporter is built, before anything is sent.

use std::io;

/// Why an [`Exporter`](super::Exporter) could not be configured or started.
///
/// Failures to deliver a window are not errors of this type: the exporter
/// retries them, then counts them ([`PushStats`](super::PushStats)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No destination was chosen: call one of the builder's `otlp_grpc`,
    /// `otlp_http`, `otlp_http_url` or `pyroscope`.
    #[error(
        "no destination: choose one with otlp_grpc, otlp_http, otlp_http_url or pyroscope \
         (or ExporterBuilder::from_env)"
    )]
    NoDestination,
    /// An endpoint is not an `http://` URL with a host.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `https://` endpoint: the `push` feature has no TLS stack.
    #[error(
        "endpoint {endpoint:?} needs TLS, which rover's `push` feature does not include \
         (it would pull in rustls); use an http:// endpoint, e.g. a local OpenTelemetry \
         Collector or Alloy that forwards over TLS"
    )]
    TlsUnavailable {
        /// The endpoint as given.
        endpoint: String,
    },
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (or its `PROFILES_` variant) names a
    /// protocol rover does not speak.
    #[error(
        "{variable}={value:?}: unsupported OTLP protocol; rover speaks \"grpc\" and \
         \"http/protobuf\"{hint}"
    )]
    UnsupportedProtocol {
        /// The variable that named it.
        variable: &'static str,
        /// Its value.
        value: String,
        /// More on the value, if any.
        hint: &'static str,
    },
    /// A header (from the builder or `OTEL_EXPORTER_OTLP_HEADERS`) is not a
    /// valid name or value.
    #[error("invalid header {header:?}: {reason}")]
    InvalidHeader {
        /// The header, or the entry of the variable, as given.
        header: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A timeout variable is not a whole number of milliseconds.
    #[error("{variable}={value:?}: a timeout is a whole number of milliseconds")]
    InvalidTimeout {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// A setting of the builder is out of range.
    #[error("invalid exporter setting: {0}")]
    Setting(String),
    /// The exporter's thread or its runtime could not be started.
    #[error("could not start the exporter's thread: {0}")]
    Start(#[source] io::Error),
}
