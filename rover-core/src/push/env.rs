//! The OpenTelemetry exporter variables (`OTEL_EXPORTER_OTLP_*`), read as
//! the OTLP exporter specification says: the profiles-specific variable
//! before the general one, empty values as unset, headers as `k=v` pairs
//! with percent-encoded values, timeouts in milliseconds.

use std::time::Duration;

use super::Error;
use super::builder::Protocol;

/// The path OTLP/HTTP appends to a base endpoint for profiles.
pub(crate) const HTTP_PROFILES_PATH: &str = "/v1development/profiles";
/// The specification's default endpoints.
pub(crate) const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
pub(crate) const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318";

/// What the variables configure.
#[derive(Debug, PartialEq)]
pub(crate) struct OtlpEnv {
    pub protocol: Protocol,
    /// For gRPC the endpoint, for HTTP the URL to POST to.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

/// Reads the variables through `get` (the process environment, or a map in
/// tests).
pub(crate) fn otlp_from_vars(get: impl Fn(&str) -> Option<String>) -> Result<OtlpEnv, Error> {
    let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let first = |specific: &'static str, general: &'static str| {
        get(specific)
            .map(|v| (specific, v))
            .or_else(|| get(general).map(|v| (general, v)))
    };
    let protocol = match first(
        "OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ) {
        None => Protocol::HttpProtobuf,
        Some((variable, value)) => parse_protocol(variable, &value)?,
    };
    let url = match (
        get("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT"),
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        protocol,
    ) {
        (Some(url), _, _) => url.trim().to_string(),
        (None, Some(base), Protocol::Grpc) => base.trim().to_string(),
        (None, Some(base), Protocol::HttpProtobuf) => http_signal_url(base.trim()),
        (None, None, Protocol::Grpc) => DEFAULT_GRPC_ENDPOINT.to_string(),
        (None, None, Protocol::HttpProtobuf) => http_signal_url(DEFAULT_HTTP_ENDPOINT),
    };
    // The general headers apply unless the specific variable sets the same
    // key: both are read, the specific ones win.
    let mut headers = match get("OTEL_EXPORTER_OTLP_HEADERS") {
        Some(value) => parse_headers(&value)?,
        None => Vec::new(),
    };
    if let Some(value) = get("OTEL_EXPORTER_OTLP_PROFILES_HEADERS") {
        for (key, value) in parse_headers(&value)? {
            headers.retain(|(k, _)| *k != key);
            headers.push((key, value));
        }
    }
    let timeout = match first(
        "OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ) {
        None => None,
        Some((variable, value)) => Some(parse_timeout(variable, &value)?),
    };
    Ok(OtlpEnv {
        protocol,
        url,
        headers,
        timeout,
    })
}

/// A base endpoint with the profiles path appended (one slash between).
pub(crate) fn http_signal_url(base: &str) -> String {
    format!("{}{HTTP_PROFILES_PATH}", base.trim_end_matches('/'))
}

fn parse_protocol(variable: &'static str, value: &str) -> Result<Protocol, Error> {
    match value.trim() {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        other => Err(Error::UnsupportedProtocol {
            variable,
            value: other.to_string(),
            hint: if other == "http/json" {
                " (JSON-encoded OTLP is not implemented: use http/protobuf)"
            } else {
                ""
            },
        }),
    }
}

fn parse_timeout(variable: &'static str, value: &str) -> Result<Duration, Error> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| Error::InvalidTimeout {
            variable,
            value: value.to_string(),
        })
}

/// Parses `k=v,k2=v2` (the W3C baggage form the specification uses): keys
/// and values trimmed, values percent-decoded, empty entries skipped.
pub(crate) fn parse_headers(value: &str) -> Result<Vec<(String, String)>, Error> {
    let mut headers = Vec::new();
    for (index, entry) in value.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        // Named by its key, never its value (often a credential).
        let invalid = |reason: &str| Error::InvalidHeader {
            header: match entry.split_once('=') {
                Some((key, _)) if !key.trim().is_empty() => key.trim().to_string(),
                _ => format!("entry {} of the headers variable", index + 1),
            },
            reason: reason.to_string(),
        };
        let (key, raw) = entry
            .split_once('=')
            .ok_or_else(|| invalid("an entry of OTEL_EXPORTER_OTLP_HEADERS is key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid("the key is empty"));
        }
        let value = percent_decode(raw.trim()).map_err(|reason| invalid(&reason))?;
        headers.push((key.to_string(), value));
    }
    Ok(headers)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the decoded value is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<OtlpEnv, Error> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        otlp_from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn nothing_set_is_the_specifications_http_default() {
        let e = env(&[]).unwrap();
        assert_eq!(e.protocol, Protocol::HttpProtobuf);
        assert_eq!(e.url, "http://localhost:4318/v1development/profiles");
        assert!(e.headers.is_empty());
        assert_eq!(e.timeout, None);
        let e = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap();
        assert_eq!(e.protocol, Protocol::Grpc);
        assert_eq!(e.url, "http://localhost:4317");
    }

    #[test]
    fn the_base_endpoint_gains_the_path_over_http_only() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/");
        assert_eq!(
            env(&[base]).unwrap().url,
            "http://collector:4318/v1development/profiles"
        );
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap();
        assert_eq!(e.url, "http://collector:4317");
        // The profiles endpoint is used as is and wins over the base.
        let e = env(&[
            base,
            ("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", "http://p:9/custom"),
        ])
        .unwrap();
        assert_eq!(e.url, "http://p:9/custom");
        // An empty value is unset.
        let e = env(&[("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", " "), base]).unwrap();
        assert_eq!(e.url, "http://collector:4318/v1development/profiles");
    }

    #[test]
    fn profiles_variables_win_over_general_ones() {
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT", "250"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
            ("OTEL_EXPORTER_OTLP_PROFILES_HEADERS", "b=3"),
        ])
        .unwrap();
        assert_eq!(e.protocol, Protocol::Grpc);
        assert_eq!(e.timeout, Some(Duration::from_millis(250)));
        assert_eq!(
            e.headers,
            vec![("a".into(), "1".into()), ("b".into(), "3".into())]
        );
    }

    #[test]
    fn headers_are_trimmed_and_percent_decoded() {
        assert_eq!(
            parse_headers(" api-key = secret%20value%2C1 ,, x=a%3Db ").unwrap(),
            vec![
                ("api-key".into(), "secret value,1".into()),
                ("x".into(), "a=b".into())
            ]
        );
        assert_eq!(parse_headers("").unwrap(), vec![]);
        for bad in ["novalue", "=v", "k=%zz", "k=%4", "k=%ff"] {
            match parse_headers(bad) {
                Err(error @ Error::InvalidHeader { .. }) => {
                    let text = error.to_string();
                    assert!(!text.contains("novalue") && !text.contains("%"), "{text}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_protocols_and_timeouts_are_clear_errors() {
        let error = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert!(error.to_string().contains("http/json"), "{error}");
        assert!(error.to_string().contains("not implemented"), "{error}");
        let error = env(&[("OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL", "udp")]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL"),
            "{error}"
        );
        let error = env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]).unwrap_err();
        assert!(matches!(error, Error::InvalidTimeout { .. }), "{error}");
    }
}
