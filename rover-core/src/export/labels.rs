//! Labels an agent puts on everything it exports.

/// Labels an agent sets once and every export carries: OTLP resource
/// attributes ([`otlp_request`](super::otlp_request)), labels on every
/// pprof sample ([`write_pprof_with`](super::write_pprof_with)), and, with
/// the `push` feature, Pyroscope's series labels.
///
/// The service, its version and its environment have the OpenTelemetry
/// semantic conventions' keys (`service.name`, `service.version`,
/// `deployment.environment.name`); any other key goes out as given. Setting
/// a key again replaces its value; the order of first setting is kept.
///
/// ```
/// use rover_core::export::Labels;
/// let labels = Labels::new()
///     .service("checkout")
///     .version("1.4.2")
///     .environment("production")
///     .label("team", "payments");
/// assert_eq!(labels.service_name(), Some("checkout"));
/// let pairs: Vec<_> = labels.iter().collect();
/// assert_eq!(pairs[0], ("service.name", "checkout"));
/// assert_eq!(pairs[3], ("team", "payments"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pairs: Vec<(String, String)>,
}

/// The semantic conventions' key of the service's name.
pub const SERVICE_NAME: &str = "service.name";
/// The semantic conventions' key of the service's version.
pub const SERVICE_VERSION: &str = "service.version";
/// The semantic conventions' key of the deployment environment.
pub const DEPLOYMENT_ENVIRONMENT: &str = "deployment.environment.name";

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// The service the profiled processes belong to (`service.name`).
    /// Without it, each process's OTLP resource is named
    /// `unknown_service:EXECUTABLE`, as OpenTelemetry SDKs name theirs.
    pub fn service(self, name: impl Into<String>) -> Self {
        self.label(SERVICE_NAME, name)
    }

    /// The service's version (`service.version`).
    pub fn version(self, version: impl Into<String>) -> Self {
        self.label(SERVICE_VERSION, version)
    }

    /// The deployment environment (`deployment.environment.name`), e.g.
    /// `production`.
    pub fn environment(self, environment: impl Into<String>) -> Self {
        self.label(DEPLOYMENT_ENVIRONMENT, environment)
    }

    /// Any other label. An empty key is ignored.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    /// [`Labels::label`] in place.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        if key.is_empty() {
            return;
        }
        let value = value.into();
        match self.pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.pairs.push((key, value)),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The service's name, if set.
    pub fn service_name(&self) -> Option<&str> {
        self.get(SERVICE_NAME)
    }

    /// Every `(key, value)`, in the order the keys were first set.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether no label is set.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// How many labels are set.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_again_replaces_and_keeps_the_order() {
        let labels = Labels::new()
            .label("a", "1")
            .service("x")
            .label("a", "2")
            .label("", "ignored");
        let pairs: Vec<_> = labels.iter().collect();
        assert_eq!(pairs, [("a", "2"), ("service.name", "x")]);
        assert_eq!(labels.len(), 2);
        assert_eq!(labels.get("a"), Some("2"));
        assert!(Labels::new().is_empty());
    }
}
