//! Sending one encoded window: OTLP over gRPC (tonic's generated client),
//! OTLP over HTTP and Pyroscope's ingest (hyper's HTTP/1 client), and
//! classifying the answer as delivered, worth retrying, or refused.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;
use tonic::Code;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};

use super::builder::{ExporterBuilder, Target};
use super::queue::Item;
use super::retry::parse_retry_after;
use super::{Error, pyroscope};
use crate::export::{OtlpOptions, PprofOptions, otlp_request, write_pprof_with};

/// The most of an answer's body read (a partial success, an error text).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// One destination's client and what each request carries.
pub(crate) struct Transport {
    kind: Kind,
    otlp: OtlpOptions,
    pprof: PprofOptions,
    pyroscope_app: String,
    timeout: Duration,
}

enum Kind {
    Grpc {
        client: ProfilesServiceClient<Channel>,
        metadata: MetadataMap,
    },
    Http {
        client: Client<HttpConnector, Full<Bytes>>,
        uri: Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    Pyroscope {
        client: Client<HttpConnector, Full<Bytes>>,
        /// Scheme and authority of the server.
        origin: String,
        /// The server's URL path (Pyroscope behind a prefix).
        base_path: String,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
}

/// A window encoded for its destination, sent again as is on a retry.
pub(crate) enum Payload {
    Grpc(ExportProfilesServiceRequest),
    Http(Bytes),
    Pyroscope { uri: Uri, body: Bytes },
}

/// What one attempt came to.
#[derive(Debug, PartialEq)]
pub(crate) enum Attempt {
    /// The backend took the window; `rejected` profiles of it were refused
    /// (a partial success), with the server's message.
    Delivered { rejected: u64, message: String },
    /// Worth another attempt, after at least `after` if the server said.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Refused for good.
    Refused(String),
}

/// Checks an endpoint: `http://` with a host; `https://` is refused with
/// the reason.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<Uri, Error> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = endpoint
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(Error::TlsUnavailable {
                endpoint: endpoint.to_string(),
            });
        }
        Some(other) => return Err(invalid(&format!("unsupported scheme {other:?}"))),
        None => return Err(invalid("no scheme: write it as http://host:port")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    Ok(uri)
}

fn http_headers(headers: &[(String, String)]) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    headers
        .iter()
        .map(|(name, value)| {
            let invalid = |reason: String| Error::InvalidHeader {
                header: name.clone(),
                reason,
            };
            Ok((
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?,
                HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?,
            ))
        })
        .collect()
}

fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

impl Transport {
    /// The client for `config`'s destination. Inside the exporter's
    /// runtime (tonic's channel spawns its worker on it).
    pub(crate) fn new(config: &ExporterBuilder) -> Result<Self, Error> {
        let kind = match config.target.as_ref().ok_or(Error::NoDestination)? {
            Target::Grpc(endpoint) => {
                check_endpoint(endpoint)?;
                let mut metadata = MetadataMap::new();
                for (name, value) in &config.headers {
                    let invalid = |reason: String| Error::InvalidHeader {
                        header: name.clone(),
                        reason,
                    };
                    let key = AsciiMetadataKey::from_bytes(name.as_bytes())
                        .map_err(|e| invalid(e.to_string()))?;
                    let value = AsciiMetadataValue::try_from(value.as_str())
                        .map_err(|e| invalid(e.to_string()))?;
                    metadata.insert(key, value);
                }
                let channel = Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| Error::InvalidEndpoint {
                        endpoint: endpoint.clone(),
                        reason: e.to_string(),
                    })?
                    .connect_timeout(config.timeout)
                    .timeout(config.timeout)
                    .connect_lazy();
                Kind::Grpc {
                    client: ProfilesServiceClient::new(channel),
                    metadata,
                }
            }
            Target::Http(url) => Kind::Http {
                uri: check_endpoint(url)?,
                client: http_client(),
                headers: http_headers(&config.headers)?,
            },
            Target::Pyroscope(url) => {
                let uri = check_endpoint(url)?;
                let origin = match (uri.scheme_str(), uri.authority()) {
                    (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
                    _ => {
                        return Err(Error::InvalidEndpoint {
                            endpoint: url.clone(),
                            reason: "no host".into(),
                        });
                    }
                };
                Kind::Pyroscope {
                    client: http_client(),
                    origin,
                    base_path: uri.path().trim_end_matches('/').to_string(),
                    headers: http_headers(&config.headers)?,
                }
            }
        };
        Ok(Transport {
            kind,
            pprof: PprofOptions {
                labels: config.otlp.labels.clone(),
            },
            otlp: config.otlp.clone(),
            pyroscope_app: config.pyroscope_app.clone(),
            timeout: config.timeout,
        })
    }

    /// The window as its destination takes it.
    pub(crate) fn encode(&self, item: &Item) -> Result<Payload, String> {
        match &self.kind {
            Kind::Grpc { .. } => Ok(Payload::Grpc(otlp_request(&item.profile, &self.otlp))),
            Kind::Http { .. } => {
                let body = otlp_request(&item.profile, &self.otlp).encode_to_vec();
                let mut gz = GzEncoder::new(Vec::new(), Compression::default());
                gz.write_all(&body)
                    .and_then(|()| gz.finish())
                    .map(|bytes| Payload::Http(Bytes::from(bytes)))
                    .map_err(|e| format!("compressing the request: {e}"))
            }
            Kind::Pyroscope {
                origin, base_path, ..
            } => {
                let mut body = Vec::new();
                write_pprof_with(&item.profile, &self.pprof, &mut body)
                    .map_err(|e| format!("encoding pprof: {e}"))?;
                let labels = &self.pprof.labels;
                let name = pyroscope::series_name(
                    labels.service_name(),
                    &self.pyroscope_app,
                    item.kind,
                    labels.iter(),
                );
                let (start, end) = item.profile.time_range().unwrap_or_else(|| {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64);
                    (now, now)
                });
                let path = pyroscope::ingest_path(base_path, &name, start, end);
                let uri: Uri = format!("{origin}{path}")
                    .parse()
                    .map_err(|e| format!("building the ingest URL: {e}"))?;
                Ok(Payload::Pyroscope {
                    uri,
                    body: Bytes::from(body),
                })
            }
        }
    }

    /// One attempt, within the timeout.
    pub(crate) async fn attempt(&mut self, payload: &Payload) -> Attempt {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.send(payload)).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Retry {
                error: format!("no answer within {timeout:?}"),
                after: None,
            },
        }
    }

    async fn send(&mut self, payload: &Payload) -> Attempt {
        match (&mut self.kind, payload) {
            (Kind::Grpc { client, metadata }, Payload::Grpc(request)) => {
                let mut request = tonic::Request::new(request.clone());
                *request.metadata_mut() = metadata.clone();
                match client.export(request).await {
                    Ok(response) => delivered(response.into_inner()),
                    Err(status) => grpc_failure(&status),
                }
            }
            (
                Kind::Http {
                    client,
                    uri,
                    headers,
                },
                Payload::Http(body),
            ) => {
                let request = post(uri.clone(), headers, body.clone(), true);
                http_exchange(client, request, true).await
            }
            (
                Kind::Pyroscope {
                    client, headers, ..
                },
                Payload::Pyroscope { uri, body },
            ) => {
                let request = post(uri.clone(), headers, body.clone(), false);
                http_exchange(client, request, false).await
            }
            _ => Attempt::Refused("payload encoded for another destination".into()),
        }
    }
}

fn post(
    uri: Uri,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    otlp: bool,
) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::builder().method(Method::POST).uri(uri);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder = if otlp {
        builder
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(CONTENT_ENCODING, "gzip")
    } else {
        builder.header(CONTENT_TYPE, "application/octet-stream")
    };
    builder
        .body(Full::new(body))
        .map_err(|e| format!("building the request: {e}"))
}

fn delivered(response: ExportProfilesServiceResponse) -> Attempt {
    let (rejected, message) = response
        .partial_success
        .map(|p| (p.rejected_profiles.max(0) as u64, p.error_message))
        .unwrap_or_default();
    Attempt::Delivered { rejected, message }
}

/// The OTLP specification's retryable gRPC codes, and transport failures
/// tonic reports with a cause attached (a connection reset mid-call).
fn grpc_failure(status: &tonic::Status) -> Attempt {
    let error = format!("gRPC {:?}: {}", status.code(), status.message());
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::Unknown | Code::Internal => std::error::Error::source(status).is_some(),
        _ => false,
    };
    if retryable {
        Attempt::Retry { error, after: None }
    } else {
        Attempt::Refused(error)
    }
}

async fn http_exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Result<Request<Full<Bytes>>, String>,
    otlp: bool,
) -> Attempt {
    let request = match request {
        Ok(request) => request,
        Err(error) => return Attempt::Refused(error),
    };
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(error) => {
            return Attempt::Retry {
                error: format!("HTTP request failed: {}", error_chain(&error)),
                after: None,
            };
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = match Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return Attempt::Retry {
                error: format!("reading the answer (HTTP {status}): {error}"),
                after: None,
            };
        }
    };
    if status.is_success() {
        if !otlp || body.is_empty() {
            return Attempt::Delivered {
                rejected: 0,
                message: String::new(),
            };
        }
        return match ExportProfilesServiceResponse::decode(body) {
            Ok(response) => delivered(response),
            // The window was taken; only the answer is unreadable.
            Err(_) => Attempt::Delivered {
                rejected: 0,
                message: String::new(),
            },
        };
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    let error = format!("HTTP {status}: {}", text.trim());
    match status {
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Attempt::Retry {
            error,
            after: retry_after,
        },
        _ => Attempt::Refused(error),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_plain_http_with_a_host() {
        assert!(check_endpoint("http://127.0.0.1:4317").is_ok());
        assert!(check_endpoint("http://collector/v1development/profiles").is_ok());
        assert!(matches!(
            check_endpoint("https://collector:4317"),
            Err(Error::TlsUnavailable { .. })
        ));
        for bad in ["collector:4317", "ftp://x", "http://", "not a url", ""] {
            let error = check_endpoint(bad).unwrap_err();
            assert!(
                matches!(error, Error::InvalidEndpoint { .. }),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn grpc_codes_split_into_retry_and_refused() {
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
        ] {
            assert!(matches!(
                grpc_failure(&tonic::Status::new(code, "x")),
                Attempt::Retry { .. }
            ));
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::Unimplemented,
            Code::Unknown,
        ] {
            assert!(matches!(
                grpc_failure(&tonic::Status::new(code, "x")),
                Attempt::Refused(_)
            ));
        }
    }

    #[test]
    fn a_partial_success_keeps_its_count_and_message() {
        use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesPartialSuccess;
        let response = ExportProfilesServiceResponse {
            partial_success: Some(ExportProfilesPartialSuccess {
                rejected_profiles: 2,
                error_message: "too old".into(),
            }),
        };
        assert_eq!(
            delivered(response),
            Attempt::Delivered {
                rejected: 2,
                message: "too old".into()
            }
        );
        assert_eq!(
            delivered(ExportProfilesServiceResponse::default()),
            Attempt::Delivered {
                rejected: 0,
                message: String::new()
            }
        );
    }
}
