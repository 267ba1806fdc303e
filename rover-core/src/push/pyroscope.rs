//! Pyroscope's ingest API: the application name with its labels, and the
//! query of `POST /ingest`.
//!
//! Pyroscope reads the series from `name=APP.SUFFIX{k=v,...}`: label names
//! must be `[a-zA-Z_][a-zA-Z0-9_]*`, so other characters (the dots of the
//! OpenTelemetry keys) become `_`; values cannot hold the `{},=` that
//! delimit them, which become `_` too.

use crate::profile::ProfileKind;

/// The application name when the labels set no `service.name`.
pub(crate) const DEFAULT_APP: &str = "rover";

/// The suffix of a window's series: `.cpu` for on-CPU windows (Pyroscope's
/// own name for CPU profiles), `.off_cpu` for off-CPU ones.
pub(crate) fn suffix(kind: ProfileKind) -> &'static str {
    match kind {
        ProfileKind::OnCpu => "cpu",
        ProfileKind::OffCpu => "off_cpu",
    }
}

/// `APP.SUFFIX{k=v,...}`: `service` (else `default_app`) as the application,
/// every other label sanitised; a key that sanitises like an earlier one
/// replaces it.
pub(crate) fn series_name<'a>(
    service: Option<&str>,
    default_app: &str,
    kind: ProfileKind,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
) -> String {
    let app: String = service
        .filter(|s| !s.is_empty())
        .unwrap_or(default_app)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (key, value) in labels {
        if key == "service.name" {
            continue;
        }
        let key = label_name(key);
        let value: String = value
            .chars()
            .map(|c| if "{},=".contains(c) { '_' } else { c })
            .collect();
        pairs.retain(|(k, _)| *k != key);
        pairs.push((key, value));
    }
    let labels: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{app}.{}{{{}}}", suffix(kind), labels.join(","))
}

/// A Pyroscope label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// `/ingest?name=…&from=…&until=…&format=pprof` under the server's URL
/// path `base_path`, with the window's span in Unix seconds (`from` rounded
/// down, `until` up).
pub(crate) fn ingest_path(
    base_path: &str,
    name: &str,
    start_unix_nanos: u64,
    end_unix_nanos: u64,
) -> String {
    let from = start_unix_nanos / 1_000_000_000;
    let until = end_unix_nanos.div_ceil(1_000_000_000).max(from);
    format!(
        "{}/ingest?name={}&from={from}&until={until}&format=pprof",
        base_path.trim_end_matches('/'),
        percent_encode(name)
    )
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sanitised_into_the_series_name() {
        let labels = [
            ("service.name", "checkout"),
            ("service.version", "1.2"),
            ("deployment.environment.name", "prod"),
            ("team", "a,b{c}=d"),
            ("9lives", "x"),
            ("", "e"),
        ];
        assert_eq!(
            series_name(
                Some("checkout"),
                DEFAULT_APP,
                ProfileKind::OnCpu,
                labels.into_iter()
            ),
            "checkout.cpu{service_version=1.2,deployment_environment_name=prod,\
             team=a_b_c__d,_9lives=x,_=e}"
        );
    }

    #[test]
    fn the_app_defaults_and_off_cpu_has_its_own_suffix() {
        assert_eq!(
            series_name(None, DEFAULT_APP, ProfileKind::OffCpu, std::iter::empty()),
            "rover.off_cpu{}"
        );
        assert_eq!(
            series_name(Some(""), "agent", ProfileKind::OnCpu, std::iter::empty()),
            "agent.cpu{}"
        );
        assert_eq!(
            series_name(
                Some("my app/π"),
                "x",
                ProfileKind::OnCpu,
                std::iter::empty()
            ),
            "my_app__.cpu{}"
        );
        // A later key that sanitises the same replaces the earlier one.
        assert_eq!(
            series_name(
                None,
                "a",
                ProfileKind::OnCpu,
                [("k.x", "1"), ("k_x", "2")].into_iter()
            ),
            "a.cpu{k_x=2}"
        );
    }

    #[test]
    fn the_query_has_the_encoded_name_and_the_span_in_seconds() {
        let path = ingest_path(
            "/pyro/",
            "app.cpu{env=prod,v=1 2}",
            1_700_000_000_400_000_000,
            1_700_000_001_200_000_000,
        );
        assert_eq!(
            path,
            "/pyro/ingest?name=app.cpu%7Benv%3Dprod%2Cv%3D1%202%7D\
             &from=1700000000&until=1700000002&format=pprof"
        );
        assert_eq!(
            ingest_path("", "a.cpu{}", 5_000_000_000, 5_000_000_000),
            "/ingest?name=a.cpu%7B%7D&from=5&until=5&format=pprof"
        );
    }
}
