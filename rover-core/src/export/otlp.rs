//! OTLP profiles: a [`Profile`] as an OpenTelemetry
//! `ExportProfilesServiceRequest` (`opentelemetry/proto/profiles/v1development`,
//! proto 1.10 and later), with the `opentelemetry-proto` crate's types.
//!
//! One request holds one `ProfilesDictionary` shared by every profile in
//! it, one `ResourceProfiles` per process, and in each one OTLP `Profile`
//! per sample type (on-CPU `samples`; off-CPU `off_cpu` and
//! `context_switch`, over the same stacks). [`docs/exporting.md`] tells
//! every attribute.
//!
//! [`docs/exporting.md`]: https://github.com/rover-rs/rover/blob/main/docs/exporting.md

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development as pb;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::error::ExportError;
use super::labels::{Labels, SERVICE_NAME};
use crate::profile::{
    Frame, FrameId, FrameKind, OffCpuState, Profile, ProfileKind, StackId, ThreadId,
};

/// How [`otlp_request`], [`write_otlp`] and [`OtlpEncoder`] describe what
/// they encode.
///
/// ```
/// use rover_core::export::{Labels, OtlpOptions};
/// let options = OtlpOptions {
///     labels: Labels::new().service("checkout").environment("staging"),
///     ..OtlpOptions::default()
/// };
/// assert!(options.host_name.is_none()); // this machine's name
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpOptions {
    /// Resource attributes of every process: `service.name` and the other
    /// labels.
    pub labels: Labels,
    /// `host.name`; `None` takes this machine's host name.
    pub host_name: Option<String>,
}

/// The attribute keys rover writes, from the OpenTelemetry semantic
/// conventions where they have one.
pub mod keys {
    /// Resource: the machine's host name.
    pub const HOST_NAME: &str = "host.name";
    /// Resource: the process id.
    pub const PROCESS_PID: &str = "process.pid";
    /// Resource: the executable's name (the process name).
    pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
    /// Resource: the executable's path.
    pub const PROCESS_EXECUTABLE_PATH: &str = "process.executable.path";
    /// Resource and mapping: the GNU build id, in hex.
    pub const PROCESS_EXECUTABLE_BUILD_ID_GNU: &str = "process.executable.build_id.gnu";
    /// Resource: the container id.
    pub const CONTAINER_ID: &str = "container.id";
    /// Sample: the thread id.
    pub const THREAD_ID: &str = "thread.id";
    /// Sample: the thread's name.
    pub const THREAD_NAME: &str = "thread.name";
    /// Sample (off-CPU): the state the task blocked in (`interruptible`,
    /// `uninterruptible`, `preempted`, `other`). The semantic conventions
    /// have no key for it, so it carries rover's name.
    pub const TASK_STATE: &str = "rover.task.state";
    /// Location: where the code runs (`native`, `kernel`, `jit`, and
    /// `truncated` for the marker frame of a stack walk that stopped).
    pub const FRAME_TYPE: &str = "profile.frame.type";
}

/// `profile` as one request, with its own dictionary.
///
/// ```
/// use rover_core::export::{OtlpOptions, otlp_request};
/// let request = otlp_request(&rover_core::Profile::new(), &OtlpOptions::default());
/// let dictionary = request.dictionary.unwrap();
/// assert_eq!(dictionary.string_table[0], "");
/// ```
pub fn otlp_request(profile: &Profile, options: &OtlpOptions) -> ExportProfilesServiceRequest {
    let mut encoder = OtlpEncoder::new(options);
    encoder.add(profile);
    encoder.finish()
}

/// Writes [`otlp_request`]'s request, serialized (protobuf, not
/// compressed), to `out`: what an OTLP/HTTP exporter posts and what the
/// official classes' `ExportProfilesServiceRequest.FromString` read.
///
/// ```no_run
/// # fn demo(profile: &rover_core::Profile) -> Result<(), Box<dyn std::error::Error>> {
/// use rover_core::export::{OtlpOptions, write_otlp};
/// write_otlp(profile, &OtlpOptions::default(), std::fs::File::create("rover.otlp.pb")?)?;
/// # Ok(()) }
/// ```
pub fn write_otlp(
    profile: &Profile,
    options: &OtlpOptions,
    mut out: impl Write,
) -> Result<(), ExportError> {
    out.write_all(&otlp_request(profile, options).encode_to_vec())?;
    out.flush()?;
    Ok(())
}

/// Builds one request from several profiles (windows of one session, or an
/// on-CPU and an off-CPU one) over one shared dictionary: a process seen in
/// several is one resource, and each profile added is its own OTLP
/// `Profile` per sample type.
///
/// ```
/// use rover_core::export::{OtlpEncoder, OtlpOptions};
/// # let (on_cpu, off_cpu) = (rover_core::Profile::new(), rover_core::Profile::new());
/// let mut encoder = OtlpEncoder::new(&OtlpOptions::default());
/// encoder.add(&on_cpu);
/// encoder.add(&off_cpu);
/// let request = encoder.finish();
/// assert!(request.dictionary.is_some());
/// ```
pub struct OtlpEncoder {
    options: OtlpOptions,
    host_name: Option<String>,
    dict: Dictionary,
    resources: Vec<pb::ResourceProfiles>,
    resource_ids: HashMap<(u32, String), usize>,
}

impl std::fmt::Debug for OtlpEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpEncoder")
            .field("resources", &self.resources.len())
            .field("strings", &self.dict.strings.len())
            .field("locations", &self.dict.locations.len())
            .finish()
    }
}

/// Which of a profile's three sample types a sample belongs to.
#[derive(Clone, Copy)]
enum Series {
    Samples,
    OffCpuNanos,
    Switches,
}

/// One OTLP profile being built: samples merged by (stack, attributes).
struct Pending {
    resource: usize,
    series: Series,
    samples: Vec<pb::Sample>,
    by_key: HashMap<(i32, Vec<i32>), usize>,
}

impl Pending {
    fn add(&mut self, stack: i32, attributes: Vec<i32>, value: u64) {
        let value = saturate(value);
        match self.by_key.entry((stack, attributes)) {
            hashbrown::hash_map::Entry::Occupied(at) => {
                let total = &mut self.samples[*at.get()].values[0];
                *total = total.saturating_add(value);
            }
            hashbrown::hash_map::Entry::Vacant(slot) => {
                let attribute_indices = slot.key().1.clone();
                slot.insert(self.samples.len());
                self.samples.push(pb::Sample {
                    stack_index: stack,
                    attribute_indices,
                    link_index: 0,
                    values: vec![value],
                    timestamps_unix_nano: Vec::new(),
                });
            }
        }
    }
}

impl OtlpEncoder {
    /// An empty request described by `options`.
    pub fn new(options: &OtlpOptions) -> Self {
        let host_name = options.host_name.clone().or_else(this_host_name);
        OtlpEncoder {
            options: options.clone(),
            host_name,
            dict: Dictionary::new(),
            resources: Vec::new(),
            resource_ids: HashMap::new(),
        }
    }

    /// Adds `profile`: its samples under their processes' resources, one
    /// OTLP profile per sample type and process. A profile without samples
    /// adds nothing.
    pub fn add(&mut self, profile: &Profile) {
        let on = profile.has_kind(ProfileKind::OnCpu) || !profile.has_kind(ProfileKind::OffCpu);
        let off = profile.has_kind(ProfileKind::OffCpu);
        let mut local = Local::default();
        // Per (resource, series): the OTLP profile being built.
        let mut pending: Vec<Pending> = Vec::new();
        let mut pending_ids: HashMap<(usize, u8), usize> = HashMap::new();
        let mut slot = |pending: &mut Vec<Pending>, resource: usize, series: Series| {
            let key = (resource, series as u8);
            *pending_ids.entry(key).or_insert_with(|| {
                pending.push(Pending {
                    resource,
                    series,
                    samples: Vec::new(),
                    by_key: HashMap::new(),
                });
                pending.len() - 1
            })
        };
        for entry in profile.entries() {
            let Some(thread) = profile.thread(entry.thread) else {
                continue;
            };
            // Per thread, once: its resource and its two attributes.
            let (resource, attributes) = match local.threads.get(&entry.thread) {
                Some(&cached) => cached,
                None => {
                    let resource = self.resource(profile, thread.pid, thread.process_name);
                    let tid = self
                        .dict
                        .attribute(keys::THREAD_ID, Value::Int(thread.tid.into()));
                    let name = self
                        .dict
                        .attribute(keys::THREAD_NAME, Value::Str(thread.comm.to_owned()));
                    local.threads.insert(entry.thread, (resource, [tid, name]));
                    (resource, [tid, name])
                }
            };
            let attributes = attributes.to_vec();
            let stack = self.stack(profile, &mut local, entry.stack);
            if on && entry.value.samples > 0 {
                let i = slot(&mut pending, resource, Series::Samples);
                pending[i].add(stack, attributes.clone(), entry.value.samples);
            }
            if off {
                for state in OffCpuState::ALL {
                    let v = entry.value.off_cpu[state.index()];
                    if v.switches == 0 && v.nanos == 0 {
                        continue;
                    }
                    let mut with_state = attributes.clone();
                    with_state.push(
                        self.dict
                            .attribute(keys::TASK_STATE, Value::Str(state.name().to_owned())),
                    );
                    let i = slot(&mut pending, resource, Series::OffCpuNanos);
                    pending[i].add(stack, with_state.clone(), v.nanos);
                    let i = slot(&mut pending, resource, Series::Switches);
                    pending[i].add(stack, with_state, v.switches);
                }
            }
        }
        let (time_unix_nano, duration_nano) = match profile.time_range() {
            Some((start, end)) => (start, end.saturating_sub(start)),
            None => (0, 0),
        };
        for p in pending {
            let (sample_type, period_type, period) = match p.series {
                Series::Samples => {
                    let sample_type = self.dict.value_type("samples", "count");
                    match profile.sampling_frequency() {
                        Some(hz) => (
                            sample_type,
                            Some(self.dict.value_type("cpu", "nanoseconds")),
                            saturate(1_000_000_000 / hz),
                        ),
                        None => (sample_type, None, 0),
                    }
                }
                Series::OffCpuNanos => (self.dict.value_type("off_cpu", "nanoseconds"), None, 0),
                Series::Switches => (self.dict.value_type("context_switch", "count"), None, 0),
            };
            let message = pb::Profile {
                sample_type: Some(sample_type),
                samples: p.samples,
                time_unix_nano,
                duration_nano,
                period_type,
                period,
                profile_id: profile_id(),
                dropped_attributes_count: 0,
                original_payload_format: String::new(),
                original_payload: Vec::new(),
                attribute_indices: Vec::new(),
            };
            if let Some(scope) = self.resources[p.resource].scope_profiles.first_mut() {
                scope.profiles.push(message);
            }
        }
    }

    /// The request: every resource that received samples, and the
    /// dictionary.
    pub fn finish(self) -> ExportProfilesServiceRequest {
        let resource_profiles = self
            .resources
            .into_iter()
            .filter(|r| r.scope_profiles.iter().any(|s| !s.profiles.is_empty()))
            .collect();
        ExportProfilesServiceRequest {
            resource_profiles,
            dictionary: Some(self.dict.finish()),
        }
    }

    /// The resource of process `pid` named `name`, made on first sight.
    fn resource(&mut self, profile: &Profile, pid: u32, name: &str) -> usize {
        if let Some(&i) = self.resource_ids.get(&(pid, name.to_owned())) {
            return i;
        }
        let mut attributes = Vec::new();
        let service = match self.options.labels.service_name() {
            Some(service) => service.to_owned(),
            None => format!("unknown_service:{name}"),
        };
        attributes.push(string_kv(SERVICE_NAME, service));
        for (key, value) in self.options.labels.iter() {
            if key != SERVICE_NAME {
                attributes.push(string_kv(key, value.to_owned()));
            }
        }
        if let Some(host) = &self.host_name {
            attributes.push(string_kv(keys::HOST_NAME, host.clone()));
        }
        attributes.push(KeyValue {
            key: keys::PROCESS_PID.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(pid.into())),
            }),
            key_strindex: 0,
        });
        attributes.push(string_kv(keys::PROCESS_EXECUTABLE_NAME, name.to_owned()));
        if let Some(identity) = profile.process_identity(pid) {
            if let Some(exe) = &identity.exe {
                attributes.push(string_kv(keys::PROCESS_EXECUTABLE_PATH, exe.clone()));
                if let Some(build_id) = profile.build_id(exe) {
                    attributes.push(string_kv(
                        keys::PROCESS_EXECUTABLE_BUILD_ID_GNU,
                        build_id.to_owned(),
                    ));
                }
            }
            if let Some(container) = &identity.container_id {
                attributes.push(string_kv(keys::CONTAINER_ID, container.clone()));
            }
        }
        self.resources.push(pb::ResourceProfiles {
            resource: Some(Resource {
                attributes,
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            scope_profiles: vec![pb::ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: "rover".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                profiles: Vec::new(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
        let i = self.resources.len() - 1;
        self.resource_ids.insert((pid, name.to_owned()), i);
        i
    }

    /// The stack-table index of a profile's stack: leaf first, an address
    /// in inlined code one location with a line per function (innermost
    /// first, the function they were inlined into last).
    fn stack(&mut self, profile: &Profile, local: &mut Local, stack: StackId) -> i32 {
        if let Some(&i) = local.stacks.get(&stack) {
            return i;
        }
        let locations = profile
            .address_groups(stack)
            .map(|group| self.location(profile, local, group))
            .collect();
        let i = self.dict.stack(locations);
        local.stacks.insert(stack, i);
        i
    }

    fn location(&mut self, profile: &Profile, local: &mut Local, group: &[FrameId]) -> i32 {
        if let Some(&i) = local.locations.get(group) {
            return i;
        }
        let frames: Vec<Frame<'_>> = group.iter().filter_map(|&f| profile.frame(f)).collect();
        let lines: Vec<pb::Line> = frames.iter().map(|f| self.dict.line(f)).collect();
        let outer = frames.last();
        let mapping = match outer.and_then(|f| f.module) {
            Some(module) => self.dict.mapping(module, profile.build_id(module)),
            None => 0,
        };
        let address = outer
            .filter(|f| f.kind == FrameKind::Unknown)
            .and_then(|f| f.offset)
            .unwrap_or(0);
        let kind = outer.map_or("native", |f| frame_type(f));
        let kind = self
            .dict
            .attribute(keys::FRAME_TYPE, Value::Str(kind.to_owned()));
        let i = self.dict.location(pb::Location {
            mapping_index: mapping,
            address,
            lines,
            attribute_indices: vec![kind],
        });
        local.locations.insert(group.to_vec(), i);
        i
    }
}

/// `profile.frame.type` of a location, from its outermost frame.
fn frame_type(frame: &Frame<'_>) -> &'static str {
    match frame.kind {
        FrameKind::Kernel => "kernel",
        FrameKind::Native => "native",
        FrameKind::Jit => "jit",
        FrameKind::Truncated => "truncated",
        // Unresolved: kernel addresses are named after `[kernel.kallsyms]`.
        FrameKind::Unknown if frame.module.is_some_and(|m| m.starts_with("[kernel")) => "kernel",
        FrameKind::Unknown => "native",
    }
}

/// Per-profile caches: its ids mean nothing in another profile.
#[derive(Default)]
struct Local {
    threads: HashMap<ThreadId, (usize, [i32; 2])>,
    stacks: HashMap<StackId, i32>,
    locations: HashMap<Vec<FrameId>, i32>,
}

/// An attribute's value, as a dictionary key.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Value {
    Str(String),
    Int(i64),
}

/// The request's `ProfilesDictionary`, each table starting with its zero
/// value, every entry interned.
struct Dictionary {
    strings: Vec<String>,
    string_ids: HashMap<String, i32>,
    mappings: Vec<pb::Mapping>,
    mapping_ids: HashMap<String, i32>,
    functions: Vec<pb::Function>,
    function_ids: HashMap<(i32, i32), i32>,
    locations: Vec<pb::Location>,
    location_ids: HashMap<LocationKey, i32>,
    stacks: Vec<pb::Stack>,
    stack_ids: HashMap<Vec<i32>, i32>,
    attributes: Vec<pb::KeyValueAndUnit>,
    attribute_ids: HashMap<(i32, Value), i32>,
}

/// A location by content, across profiles.
#[derive(PartialEq, Eq, Hash)]
struct LocationKey {
    mapping: i32,
    address: u64,
    lines: Vec<(i32, i64)>,
    attributes: Vec<i32>,
}

impl Dictionary {
    fn new() -> Self {
        let mut d = Dictionary {
            strings: Vec::new(),
            string_ids: HashMap::new(),
            mappings: vec![pb::Mapping::default()],
            mapping_ids: HashMap::new(),
            functions: vec![pb::Function::default()],
            function_ids: HashMap::new(),
            locations: vec![pb::Location::default()],
            location_ids: HashMap::new(),
            stacks: vec![pb::Stack::default()],
            stack_ids: HashMap::new(),
            attributes: vec![pb::KeyValueAndUnit::default()],
            attribute_ids: HashMap::new(),
        };
        d.string("");
        d
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = index(self.strings.len());
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), i);
        i
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> pb::ValueType {
        pb::ValueType {
            type_strindex: self.string(kind),
            unit_strindex: self.string(unit),
        }
    }

    fn attribute(&mut self, key: &str, value: Value) -> i32 {
        let key = self.string(key);
        if let Some(&i) = self.attribute_ids.get(&(key, value.clone())) {
            return i;
        }
        let any = match &value {
            Value::Str(s) => any_value::Value::StringValue(s.clone()),
            Value::Int(n) => any_value::Value::IntValue(*n),
        };
        let i = index(self.attributes.len());
        self.attributes.push(pb::KeyValueAndUnit {
            key_strindex: key,
            value: Some(AnyValue { value: Some(any) }),
            unit_strindex: 0,
        });
        self.attribute_ids.insert((key, value), i);
        i
    }

    fn mapping(&mut self, module: &str, build_id: Option<&str>) -> i32 {
        if let Some(&i) = self.mapping_ids.get(module) {
            return i;
        }
        let filename_strindex = self.string(module);
        let attribute_indices = build_id
            .map(|b| {
                vec![self.attribute(
                    keys::PROCESS_EXECUTABLE_BUILD_ID_GNU,
                    Value::Str(b.to_owned()),
                )]
            })
            .unwrap_or_default();
        let i = index(self.mappings.len());
        self.mappings.push(pb::Mapping {
            memory_start: 0,
            memory_limit: 0,
            file_offset: 0,
            filename_strindex,
            attribute_indices,
        });
        self.mapping_ids.insert(module.to_owned(), i);
        i
    }

    fn line(&mut self, frame: &Frame<'_>) -> pb::Line {
        let name = self.string(&frame.display_name());
        let file = self.string(frame.file.unwrap_or(""));
        let next = index(self.functions.len());
        let function_index = *self.function_ids.entry((name, file)).or_insert(next);
        if function_index == next {
            self.functions.push(pb::Function {
                name_strindex: name,
                system_name_strindex: name,
                filename_strindex: file,
                start_line: 0,
            });
        }
        pb::Line {
            function_index,
            line: i64::from(frame.line.unwrap_or(0)),
            column: 0,
        }
    }

    fn location(&mut self, location: pb::Location) -> i32 {
        let key = LocationKey {
            mapping: location.mapping_index,
            address: location.address,
            lines: location
                .lines
                .iter()
                .map(|l| (l.function_index, l.line))
                .collect(),
            attributes: location.attribute_indices.clone(),
        };
        if let Some(&i) = self.location_ids.get(&key) {
            return i;
        }
        let i = index(self.locations.len());
        self.locations.push(location);
        self.location_ids.insert(key, i);
        i
    }

    fn stack(&mut self, locations: Vec<i32>) -> i32 {
        if let Some(&i) = self.stack_ids.get(&locations) {
            return i;
        }
        let i = index(self.stacks.len());
        self.stacks.push(pb::Stack {
            location_indices: locations.clone(),
        });
        self.stack_ids.insert(locations, i);
        i
    }

    fn finish(self) -> pb::ProfilesDictionary {
        pb::ProfilesDictionary {
            mapping_table: self.mappings,
            location_table: self.locations,
            function_table: self.functions,
            link_table: vec![pb::Link::default()],
            string_table: self.strings,
            attribute_table: self.attributes,
            stack_table: self.stacks,
        }
    }
}

fn string_kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        key_strindex: 0,
    }
}

/// A table index: tables past `i32::MAX` entries cannot be written, and
/// no profile rover holds comes near (the last index is reused instead of
/// wrapping).
fn index(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

fn saturate(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// This machine's host name, from the kernel (the UTS namespace's).
fn this_host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// A profile id: 16 bytes, never all zero, unique within this process and
/// unlikely to repeat across processes (time, pid and a counter, mixed).
fn profile_id() -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let a = mix(now ^ u64::from(std::process::id()).rotate_left(32));
    let b = mix(count.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ a);
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(&a.to_be_bytes());
    id.extend_from_slice(&(b | 1).to_be_bytes());
    id
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use rover_symbolize::{Origin, Symbolized};

    use super::*;
    use crate::profile::{Sample, SampleValue, test_frames};

    fn sym(name: &str, module: &str, origin: Origin, inlined: &[&str]) -> Symbolized {
        test_frames::sym_inlined(name, module, origin, inlined)
    }

    fn on_cpu(p: &mut Profile, tid: u32, user: &[Symbolized], kernel: &[Symbolized], n: u64) {
        p.add_sample(&Sample {
            pid: 10,
            tid,
            process_name: "app",
            comm: if tid == 10 { "app" } else { "worker" },
            kernel,
            user,
            value: SampleValue::OnCpu { samples: n },
        });
    }

    struct Read<'r>(&'r ExportProfilesServiceRequest);

    impl Read<'_> {
        fn dict(&self) -> &pb::ProfilesDictionary {
            self.0.dictionary.as_ref().unwrap()
        }
        fn string(&self, i: i32) -> &str {
            &self.dict().string_table[i as usize]
        }
        fn sample_type(&self, p: &pb::Profile) -> (&str, &str) {
            let t = p.sample_type.unwrap();
            (self.string(t.type_strindex), self.string(t.unit_strindex))
        }
        /// A sample's stack as function names, leaf first, inlined ones
        /// joined by `+` innermost first.
        fn stack(&self, s: &pb::Sample) -> Vec<String> {
            let d = self.dict();
            d.stack_table[s.stack_index as usize]
                .location_indices
                .iter()
                .map(|&l| {
                    let names: Vec<&str> = d.location_table[l as usize]
                        .lines
                        .iter()
                        .map(|line| {
                            let f = &d.function_table[line.function_index as usize];
                            self.string(f.name_strindex)
                        })
                        .collect();
                    names.join("+")
                })
                .collect()
        }
        fn attributes(&self, indices: &[i32]) -> Vec<(String, String)> {
            indices
                .iter()
                .map(|&i| {
                    let a = &self.dict().attribute_table[i as usize];
                    let value = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        Some(any_value::Value::IntValue(n)) => n.to_string(),
                        other => format!("{other:?}"),
                    };
                    (self.string(a.key_strindex).to_owned(), value)
                })
                .collect()
        }
    }

    #[test]
    fn tables_start_with_their_zero_values_and_stacks_keep_inlined_lines() {
        let mut p = Profile::new();
        p.set_build_id("/bin/app", "abcd");
        p.set_sampling_frequency(100);
        p.set_time_range(1_000, 3_000);
        let user = [
            sym("outer", "/bin/app", Origin::File, &["inner", "middle"]),
            sym("main", "/bin/app", Origin::File, &[]),
        ];
        let kernel = [sym("do_sys_poll", "[kernel.kallsyms]", Origin::Kernel, &[])];
        on_cpu(&mut p, 10, &user, &kernel, 5);
        on_cpu(&mut p, 11, &user, &[], 2);
        let request = otlp_request(&p, &OtlpOptions::default());
        let r = Read(&request);
        let d = r.dict();
        assert_eq!(d.string_table[0], "");
        assert_eq!(d.mapping_table[0], pb::Mapping::default());
        assert_eq!(d.location_table[0], pb::Location::default());
        assert_eq!(d.function_table[0], pb::Function::default());
        assert_eq!(d.link_table, [pb::Link::default()]);
        assert_eq!(d.attribute_table[0], pb::KeyValueAndUnit::default());
        assert_eq!(d.stack_table[0], pb::Stack::default());

        assert_eq!(request.resource_profiles.len(), 1);
        let profiles = &request.resource_profiles[0].scope_profiles[0].profiles;
        assert_eq!(profiles.len(), 1, "on-CPU only: one sample type");
        let profile = &profiles[0];
        assert_eq!(r.sample_type(profile), ("samples", "count"));
        let period = profile.period_type.unwrap();
        assert_eq!(
            (
                r.string(period.type_strindex),
                r.string(period.unit_strindex)
            ),
            ("cpu", "nanoseconds")
        );
        assert_eq!(profile.period, 10_000_000);
        assert_eq!(
            (profile.time_unix_nano, profile.duration_nano),
            (1_000, 2_000)
        );
        assert_eq!(profile.profile_id.len(), 16);
        assert!(profile.profile_id.iter().any(|&b| b != 0));

        let mut stacks: Vec<_> = profile
            .samples
            .iter()
            .map(|s| (r.stack(s), s.values.clone()))
            .collect();
        stacks.sort();
        assert_eq!(
            stacks,
            [
                (
                    vec![
                        "do_sys_poll".into(),
                        "inner+middle+outer".into(),
                        "main".into()
                    ],
                    vec![5]
                ),
                (vec!["inner+middle+outer".into(), "main".into()], vec![2]),
            ]
        );
        // The kernel frame's location says so; the mapping has the build id.
        let leaf = d.stack_table[profile.samples[0].stack_index as usize].location_indices[0];
        let leaf = &d.location_table[leaf as usize];
        assert_eq!(
            r.attributes(&leaf.attribute_indices),
            [("profile.frame.type".to_owned(), "kernel".to_owned())]
        );
        let app = d
            .mapping_table
            .iter()
            .find(|m| r.string(m.filename_strindex) == "/bin/app")
            .unwrap();
        assert_eq!(
            r.attributes(&app.attribute_indices),
            [(
                "process.executable.build_id.gnu".to_owned(),
                "abcd".to_owned()
            )]
        );
        let worker = profile.samples.iter().find(|s| s.values == [2]).unwrap();
        assert_eq!(
            r.attributes(&worker.attribute_indices),
            [
                ("thread.id".to_owned(), "11".to_owned()),
                ("thread.name".to_owned(), "worker".to_owned())
            ]
        );
    }

    #[test]
    fn off_cpu_is_two_profiles_over_the_same_stacks_by_state() {
        let mut p = Profile::new();
        let user = [sym("read", "/lib/libc.so.6", Origin::File, &[])];
        for (state, switches, nanos) in [
            (OffCpuState::Interruptible, 3, 3_000),
            (OffCpuState::Uninterruptible, 1, 500),
        ] {
            p.add_sample(&Sample {
                pid: 10,
                tid: 10,
                process_name: "app",
                comm: "app",
                kernel: &[],
                user: &user,
                value: SampleValue::OffCpu {
                    state,
                    switches,
                    nanos,
                },
            });
        }
        let request = otlp_request(&p, &OtlpOptions::default());
        let r = Read(&request);
        let profiles = &request.resource_profiles[0].scope_profiles[0].profiles;
        let types: Vec<_> = profiles.iter().map(|p| r.sample_type(p)).collect();
        assert_eq!(
            types,
            [("off_cpu", "nanoseconds"), ("context_switch", "count")]
        );
        let by_state = |p: &pb::Profile| -> Vec<(String, i64, i32)> {
            let mut v: Vec<_> = p
                .samples
                .iter()
                .map(|s| {
                    let attrs = r.attributes(&s.attribute_indices);
                    let state = attrs
                        .iter()
                        .find(|(k, _)| k == keys::TASK_STATE)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    (state, s.values[0], s.stack_index)
                })
                .collect();
            v.sort();
            v
        };
        let nanos = by_state(&profiles[0]);
        let switches = by_state(&profiles[1]);
        assert_eq!(
            nanos
                .iter()
                .map(|(s, v, _)| (s.as_str(), *v))
                .collect::<Vec<_>>(),
            [("interruptible", 3_000), ("uninterruptible", 500)]
        );
        assert_eq!(
            switches
                .iter()
                .map(|(s, v, _)| (s.as_str(), *v))
                .collect::<Vec<_>>(),
            [("interruptible", 3), ("uninterruptible", 1)]
        );
        assert_eq!(nanos[0].2, switches[0].2, "one stack, shared");
    }

    #[test]
    fn resources_carry_labels_process_and_host_and_share_one_dictionary() {
        let mut a = Profile::new();
        let user = [sym("work", "/bin/app", Origin::File, &[])];
        on_cpu(&mut a, 10, &user, &[], 4);
        let mut b = Profile::new();
        on_cpu(&mut b, 10, &user, &[], 6);
        b.add_sample(&Sample {
            pid: 20,
            tid: 20,
            process_name: "other",
            comm: "other",
            kernel: &[],
            user: &user,
            value: SampleValue::OnCpu { samples: 1 },
        });
        let options = OtlpOptions {
            labels: Labels::new()
                .service("checkout")
                .environment("prod")
                .label("team", "pay"),
            host_name: Some("host-1".into()),
        };
        let mut encoder = OtlpEncoder::new(&options);
        encoder.add(&a);
        encoder.add(&b);
        let request = encoder.finish();
        let r = Read(&request);
        assert_eq!(
            request.resource_profiles.len(),
            2,
            "one resource per process"
        );
        let attrs = |rp: &pb::ResourceProfiles| -> Vec<(String, String)> {
            rp.resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .map(|kv| {
                    let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        Some(any_value::Value::IntValue(n)) => n.to_string(),
                        other => format!("{other:?}"),
                    };
                    (kv.key.clone(), v)
                })
                .collect()
        };
        let first = attrs(&request.resource_profiles[0]);
        for want in [
            ("service.name", "checkout"),
            ("deployment.environment.name", "prod"),
            ("team", "pay"),
            ("host.name", "host-1"),
            ("process.pid", "10"),
            ("process.executable.name", "app"),
        ] {
            assert!(
                first.iter().any(|(k, v)| (k.as_str(), v.as_str()) == want),
                "{want:?} in {first:?}"
            );
        }
        // Process 10 was in both profiles: two OTLP profiles, one resource.
        let p10 = &request.resource_profiles[0].scope_profiles[0].profiles;
        assert_eq!(p10.len(), 2);
        assert_eq!(p10[0].samples[0].stack_index, p10[1].samples[0].stack_index);
        let totals: Vec<i64> = p10.iter().map(|p| p.samples[0].values[0]).collect();
        assert_eq!(totals, [4, 6]);
        assert_eq!(r.string(0), "");
        // Without a service label, SDKs' default name.
        let plain = otlp_request(&a, &OtlpOptions::default());
        let service = attrs(&plain.resource_profiles[0]);
        assert_eq!(
            service[0],
            ("service.name".into(), "unknown_service:app".into())
        );
    }

    #[test]
    fn the_request_round_trips_and_an_empty_profile_has_no_resources() {
        let request = otlp_request(&Profile::new(), &OtlpOptions::default());
        assert!(request.resource_profiles.is_empty());
        let mut p = Profile::new();
        on_cpu(
            &mut p,
            10,
            &[sym("f", "/bin/app", Origin::File, &[])],
            &[],
            1,
        );
        let mut bytes = Vec::new();
        write_otlp(&p, &OtlpOptions::default(), &mut bytes).unwrap();
        let back = ExportProfilesServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, otlp_request_without_ids(&p, &back));
    }

    /// `otlp_request` of `p` with `like`'s profile ids (new ones are drawn
    /// per call).
    fn otlp_request_without_ids(
        p: &Profile,
        like: &ExportProfilesServiceRequest,
    ) -> ExportProfilesServiceRequest {
        let mut r = otlp_request(p, &OtlpOptions::default());
        for (mine, theirs) in r.resource_profiles.iter_mut().zip(&like.resource_profiles) {
            for (a, b) in mine.scope_profiles[0]
                .profiles
                .iter_mut()
                .zip(&theirs.scope_profiles[0].profiles)
            {
                a.profile_id = b.profile_id.clone();
            }
        }
        r
    }
}
