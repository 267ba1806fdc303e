//! The exporter's configuration: one destination, its headers and timeout,
//! the labels every export carries, the queue and the retries.

use std::time::Duration;

use super::env::{self, http_signal_url};
use super::pyroscope::DEFAULT_APP;
use super::{Error, Exporter, Retry};
use crate::export::{Labels, OtlpOptions};

/// The OTLP transports (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// OTLP over gRPC: `ProfilesService/Export` (`grpc`).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`http/protobuf`).
    HttpProtobuf,
}

/// Where an exporter pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The gRPC endpoint (`http://host:port`).
    Grpc(String),
    /// The URL OTLP/HTTP requests are posted to.
    Http(String),
    /// The Pyroscope server's URL (`/ingest` is appended).
    Pyroscope(String),
}

/// Configures an [`Exporter`]: start with [`Exporter::builder`] or
/// [`ExporterBuilder::from_env`], choose one destination, then
/// [`build`](ExporterBuilder::build).
///
/// ```no_run
/// use std::time::Duration;
/// use rover_core::export::Labels;
/// use rover_core::push::{Exporter, Retry};
///
/// let exporter = Exporter::builder()
///     .otlp_grpc("http://collector:4317")
///     .header("x-api-key", "secret")
///     .timeout(Duration::from_secs(5))
///     .labels(Labels::new().service("checkout").environment("prod"))
///     .queue_capacity(32)
///     .retry(Retry { max_attempts: 4, ..Retry::default() })
///     .build()?;
/// # Ok::<(), rover_core::push::Error>(())
/// ```
#[derive(Clone)]
pub struct ExporterBuilder {
    pub(crate) target: Option<Target>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) otlp: OtlpOptions,
    pub(crate) queue_capacity: usize,
    pub(crate) retry: Retry,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) pyroscope_app: String,
}

/// Header values are left out: they are often credentials.
impl std::fmt::Debug for ExporterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ExporterBuilder")
            .field("target", &self.target)
            .field("header_names", &header_names)
            .field("timeout", &self.timeout)
            .field("otlp", &self.otlp)
            .field("queue_capacity", &self.queue_capacity)
            .field("retry", &self.retry)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("pyroscope_app", &self.pyroscope_app)
            .finish()
    }
}

impl Default for ExporterBuilder {
    fn default() -> Self {
        ExporterBuilder {
            target: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            otlp: OtlpOptions::default(),
            queue_capacity: 64,
            retry: Retry::default(),
            shutdown_timeout: Duration::from_secs(5),
            pyroscope_app: DEFAULT_APP.to_string(),
        }
    }
}

impl ExporterBuilder {
    /// A builder configured by the OpenTelemetry exporter variables, as the
    /// OTLP exporter specification reads them (the `PROFILES_` variant of
    /// each before the general one; empty values are unset):
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL` | `grpc` or `http/protobuf` (`http/json` is an error) | `http/protobuf` |
    /// | `OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT` | the URL, used as is | |
    /// | `OTEL_EXPORTER_OTLP_ENDPOINT` | the base URL; HTTP appends `/v1development/profiles` | `http://localhost:4317` (gRPC), `http://localhost:4318` (HTTP) |
    /// | `OTEL_EXPORTER_OTLP_PROFILES_HEADERS`, `OTEL_EXPORTER_OTLP_HEADERS` | `k=v,k2=v2`, values percent-decoded (both read; the profiles one wins per key) | none |
    /// | `OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT` | per attempt, in milliseconds | 10000 |
    ///
    /// The other settings keep their defaults and can be changed on the
    /// builder returned.
    ///
    /// ```no_run
    /// let exporter = rover_core::push::ExporterBuilder::from_env()?.build()?;
    /// # Ok::<(), rover_core::push::Error>(())
    /// ```
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let env = env::otlp_from_vars(get)?;
        let mut builder = ExporterBuilder {
            target: Some(match env.protocol {
                Protocol::Grpc => Target::Grpc(env.url),
                Protocol::HttpProtobuf => Target::Http(env.url),
            }),
            headers: env.headers,
            ..ExporterBuilder::default()
        };
        if let Some(timeout) = env.timeout {
            builder.timeout = timeout;
        }
        Ok(builder)
    }

    /// Pushes OTLP over gRPC to `endpoint` (`http://host:port`), calling
    /// `opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export`.
    pub fn otlp_grpc(mut self, endpoint: impl Into<String>) -> Self {
        self.target = Some(Target::Grpc(endpoint.into()));
        self
    }

    /// Pushes OTLP over HTTP to the base URL `endpoint`: requests are
    /// posted to `endpoint` + `/v1development/profiles`, as for
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_http(mut self, endpoint: impl AsRef<str>) -> Self {
        self.target = Some(Target::Http(http_signal_url(endpoint.as_ref())));
        self
    }

    /// Pushes OTLP over HTTP, posting to `url` as given (as
    /// `OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT`).
    pub fn otlp_http_url(mut self, url: impl Into<String>) -> Self {
        self.target = Some(Target::Http(url.into()));
        self
    }

    /// Pushes pprof to the Pyroscope server at `url` (such as
    /// `http://pyroscope:4040`): `POST {url}/ingest?name=…&from=…&until=…&format=pprof`.
    pub fn pyroscope(mut self, url: impl Into<String>) -> Self {
        self.target = Some(Target::Pyroscope(url.into()));
        self
    }

    /// Adds a header (gRPC metadata) to every request, such as an API key.
    /// Header names are case-insensitive; a later one with the same name
    /// replaces the earlier.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into().to_ascii_lowercase();
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    /// The time each attempt may take, connecting included (default 10 s,
    /// the specification's).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The agent's labels (service, version, environment, any key), on
    /// every export: OTLP resource attributes, pprof sample labels, and
    /// Pyroscope's series labels.
    pub fn labels(mut self, labels: Labels) -> Self {
        self.otlp.labels = labels;
        self
    }

    /// All the OTLP options (labels and host name); the labels are also
    /// those of pprof and Pyroscope.
    pub fn otlp_options(mut self, options: OtlpOptions) -> Self {
        self.otlp = options;
        self
    }

    /// How many windows wait for delivery at most (default 64, at least 1):
    /// when full, the oldest is dropped to make room for a new one.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// How failed attempts are retried (default [`Retry::default`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// How long dropping the exporter waits for the queue to be delivered
    /// (default 5 s); [`Exporter::shutdown`] takes its own.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Pyroscope's application name when the labels set no `service.name`
    /// (default `rover`).
    pub fn pyroscope_app(mut self, name: impl Into<String>) -> Self {
        self.pyroscope_app = name.into();
        self
    }

    /// Checks the configuration and starts the exporter's thread.
    pub fn build(self) -> Result<Exporter, Error> {
        if self.target.is_none() {
            return Err(Error::NoDestination);
        }
        if self.queue_capacity == 0 {
            return Err(Error::Setting("the queue capacity is 0".into()));
        }
        if self.retry.max_attempts == 0 {
            return Err(Error::Setting(
                "retry.max_attempts is 0 (1 means a single attempt)".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::Setting("the timeout is 0".into()));
        }
        Exporter::start(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vars_picks_the_destination_and_the_timeout() {
        let builder = ExporterBuilder::from_vars(|name| match name {
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:4317".into()),
            "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("1500".into()),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some("k=v".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(builder.target, Some(Target::Grpc("http://c:4317".into())));
        assert_eq!(builder.timeout, Duration::from_millis(1500));
        assert_eq!(builder.headers, vec![("k".into(), "v".into())]);
    }

    #[test]
    fn builder_endpoints_and_headers() {
        let b = Exporter::builder().otlp_http("http://h:4318/");
        assert_eq!(
            b.target,
            Some(Target::Http("http://h:4318/v1development/profiles".into()))
        );
        let b = Exporter::builder()
            .otlp_http_url("http://h:1/x")
            .header("X-Key", "1")
            .header("x-key", "2");
        assert_eq!(b.target, Some(Target::Http("http://h:1/x".into())));
        assert_eq!(b.headers, vec![("x-key".into(), "2".into())]);
        let printed = format!("{:?}", b.header("authorization", "Bearer secret"));
        assert!(
            printed.contains("authorization") && !printed.contains("secret"),
            "{printed}"
        );
    }

    #[test]
    fn bad_settings_are_errors_before_any_thread() {
        let error = Exporter::builder().build().unwrap_err();
        assert!(matches!(error, Error::NoDestination), "{error}");
        let base = || Exporter::builder().otlp_grpc("http://127.0.0.1:1");
        for builder in [
            base().queue_capacity(0),
            base().timeout(Duration::ZERO),
            base().retry(Retry {
                max_attempts: 0,
                ..Retry::default()
            }),
        ] {
            let error = builder.build().unwrap_err();
            assert!(matches!(error, Error::Setting(_)), "{error}");
        }
    }
}
