//! Exports of a [`Profile`](crate::profile::Profile) into the formats the
//! usual tools read: folded stacks, SVG flame graphs (plain and
//! differential, through `inferno`), pprof, and OpenTelemetry's OTLP
//! profiles; and the [`Labels`] an agent puts on all of them.

mod error;
mod flamegraph;
mod folded;
mod labels;
pub mod otlp;
mod pprof;

pub use error::ExportError;
pub use flamegraph::{FlameGraphOptions, write_differential_flamegraph, write_flamegraph};
pub use folded::{FoldedOptions, FoldedPrefix, folded_lines, write_folded};
pub use labels::{DEPLOYMENT_ENVIRONMENT, Labels, SERVICE_NAME, SERVICE_VERSION};
/// The `opentelemetry-proto` crate whose types [`otlp_request`] returns
/// (its `profiles` messages), for callers that read or send them.
pub use opentelemetry_proto;
pub use otlp::{OtlpEncoder, OtlpOptions, otlp_request, write_otlp};
pub use pprof::{PprofOptions, write_pprof, write_pprof_with};
