//! pprof export: the gzipped `profile.proto` that `go tool pprof`, Grafana
//! Pyroscope and most profiling backends read.

mod proto;

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use hashbrown::HashMap;
use prost::Message;

use super::error::ExportError;
use super::labels::Labels;
use crate::profile::{Frame, FrameId, FrameKind, OffCpuState, Profile, ProfileKind, StackId};

/// Writes `profile` as a gzipped pprof protobuf to `out`.
///
/// Sample types: `samples/count` when the profile holds on-CPU data;
/// `off_cpu/nanoseconds` and `switches/count` when it holds off-CPU data
/// (all three when both). Off-CPU time is split into one sample per task
/// state, labelled `state`; every sample is labelled `pid`, `tid`, `comm`
/// and `process`. An address inside inlined code is one location with one
/// line per function, innermost first. Modules become mappings, with their
/// build id when the profile records one ([`Profile::build_id`]: a session
/// records every file module's, a
/// [`ProfileBuilder`](crate::profile::ProfileBuilder) what it is given).
///
/// ```no_run
/// # fn demo(profile: &rover_core::profile::Profile) -> Result<(), Box<dyn std::error::Error>> {
/// rover_core::export::write_pprof(profile, std::fs::File::create("rover.pb.gz")?)?;
/// // then: go tool pprof -top -sample_index=off_cpu rover.pb.gz
/// # Ok(()) }
/// ```
pub fn write_pprof(profile: &Profile, out: impl Write) -> Result<(), ExportError> {
    write_pprof_with(profile, &PprofOptions::default(), out)
}

/// What [`write_pprof_with`] adds to a pprof profile.
///
/// ```
/// use rover_core::export::{Labels, PprofOptions};
/// let options = PprofOptions { labels: Labels::new().service("checkout").version("1.4.2") };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PprofOptions {
    /// String labels put on every sample (as `service.name=checkout`),
    /// after rover's own `pid`, `tid`, `comm`, `process` (and `state`).
    pub labels: Labels,
}

/// [`write_pprof`] with `options`: the agent's labels on every sample.
///
/// ```no_run
/// # fn demo(profile: &rover_core::profile::Profile) -> Result<(), Box<dyn std::error::Error>> {
/// use rover_core::export::{Labels, PprofOptions, write_pprof_with};
/// let options = PprofOptions { labels: Labels::new().service("checkout").environment("prod") };
/// write_pprof_with(profile, &options, std::fs::File::create("rover.pb.gz")?)?;
/// // go tool pprof -tags rover.pb.gz lists service.name and deployment.environment.name
/// # Ok(()) }
/// ```
pub fn write_pprof_with(
    profile: &Profile,
    options: &PprofOptions,
    out: impl Write,
) -> Result<(), ExportError> {
    let message = Encoder::new(profile, &options.labels).encode();
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&message.encode_to_vec())?;
    gz.finish()?.flush()?;
    Ok(())
}

/// Where each sample type sits in a sample's value vector.
struct Columns {
    samples: Option<usize>,
    nanos: Option<usize>,
    switches: Option<usize>,
    len: usize,
}

struct Encoder<'p> {
    profile: &'p Profile,
    labels: &'p Labels,
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<proto::Function>,
    function_ids: HashMap<(i64, i64), u64>,
    mappings: Vec<proto::Mapping>,
    mapping_ids: HashMap<String, u64>,
    locations: Vec<proto::Location>,
    location_ids: HashMap<Vec<FrameId>, u64>,
    stack_locations: HashMap<StackId, Vec<u64>>,
}

impl<'p> Encoder<'p> {
    fn new(profile: &'p Profile, labels: &'p Labels) -> Self {
        let mut e = Self {
            profile,
            labels,
            strings: Vec::new(),
            string_ids: HashMap::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            mappings: Vec::new(),
            mapping_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            stack_locations: HashMap::new(),
        };
        e.string("");
        e
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.string(kind),
            unit: self.string(unit),
        }
    }

    fn mapping(&mut self, module: &str) -> u64 {
        if let Some(&id) = self.mapping_ids.get(module) {
            return id;
        }
        let id = self.mappings.len() as u64 + 1;
        let build_id = self.profile.build_id(module).map_or(0, |b| self.string(b));
        let filename = self.string(module);
        self.mappings.push(proto::Mapping {
            id,
            filename,
            build_id,
            // Every frame already carries its function, so pprof must not
            // try to symbolize these mappings itself.
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
            ..Default::default()
        });
        self.mapping_ids.insert(module.to_owned(), id);
        id
    }

    fn line(&mut self, frame: &Frame<'_>) -> proto::Line {
        let name = self.string(&frame.display_name());
        let file = self.string(frame.file.unwrap_or(""));
        let next = self.functions.len() as u64 + 1;
        let function_id = *self.function_ids.entry((name, file)).or_insert(next);
        if function_id == next {
            self.functions.push(proto::Function {
                id: function_id,
                name,
                system_name: name,
                filename: file,
                start_line: 0,
            });
        }
        proto::Line {
            function_id,
            line: i64::from(frame.line.unwrap_or(0)),
        }
    }

    /// One location for an address: its inlined frames (innermost first)
    /// and the function they were inlined into.
    fn location(&mut self, group: &[FrameId]) -> u64 {
        if let Some(&id) = self.location_ids.get(group) {
            return id;
        }
        let profile = self.profile;
        let frames: Vec<Frame<'p>> = group.iter().filter_map(|&f| profile.frame(f)).collect();
        let lines = frames.iter().map(|f| self.line(f)).collect();
        let outer = frames.last();
        let mapping_id = match outer.and_then(|f| f.module) {
            Some(module) => self.mapping(module),
            None => 0,
        };
        let address = outer
            .filter(|f| f.kind == FrameKind::Unknown)
            .and_then(|f| f.offset)
            .unwrap_or(0);
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id,
            address,
            line: lines,
        });
        self.location_ids.insert(group.to_vec(), id);
        id
    }

    fn stack(&mut self, stack: StackId) -> Vec<u64> {
        if let Some(ids) = self.stack_locations.get(&stack) {
            return ids.clone();
        }
        let profile = self.profile;
        let ids: Vec<u64> = profile
            .address_groups(stack)
            .map(|group| self.location(group))
            .collect();
        self.stack_locations.insert(stack, ids.clone());
        ids
    }

    fn encode(mut self) -> proto::Profile {
        let profile = self.profile;
        let on = profile.has_kind(ProfileKind::OnCpu) || !profile.has_kind(ProfileKind::OffCpu);
        let off = profile.has_kind(ProfileKind::OffCpu);
        let mut sample_type = Vec::new();
        let mut columns = Columns {
            samples: None,
            nanos: None,
            switches: None,
            len: 0,
        };
        if on {
            columns.samples = Some(sample_type.len());
            sample_type.push(self.value_type("samples", "count"));
        }
        if off {
            columns.nanos = Some(sample_type.len());
            sample_type.push(self.value_type("off_cpu", "nanoseconds"));
            columns.switches = Some(sample_type.len());
            sample_type.push(self.value_type("switches", "count"));
        }
        columns.len = sample_type.len();

        let keys = [
            self.string("pid"),
            self.string("tid"),
            self.string("comm"),
            self.string("process"),
        ];
        let state_key = self.string("state");
        let agent: Vec<(&str, &str)> = self.labels.iter().collect();
        let agent_labels: Vec<(i64, i64)> = agent
            .into_iter()
            .map(|(k, v)| (self.string(k), self.string(v)))
            .collect();
        let mut samples = Vec::new();
        for entry in profile.entries() {
            let Some(thread) = profile.thread(entry.thread) else {
                continue;
            };
            let location_id = self.stack(entry.stack);
            let mut labels = vec![
                proto::Label {
                    key: keys[0],
                    num: i64::from(thread.pid),
                    ..Default::default()
                },
                proto::Label {
                    key: keys[1],
                    num: i64::from(thread.tid),
                    ..Default::default()
                },
                proto::Label {
                    key: keys[2],
                    str: self.string(thread.comm),
                    ..Default::default()
                },
                proto::Label {
                    key: keys[3],
                    str: self.string(thread.process_name),
                    ..Default::default()
                },
            ];
            labels.extend(agent_labels.iter().map(|&(key, str)| proto::Label {
                key,
                str,
                ..Default::default()
            }));
            if let Some(col) = columns.samples
                && entry.value.samples > 0
            {
                let mut value = vec![0; columns.len];
                value[col] = saturate(entry.value.samples);
                samples.push(proto::Sample {
                    location_id: location_id.clone(),
                    value,
                    label: labels.clone(),
                });
            }
            if let (Some(nanos), Some(switches)) = (columns.nanos, columns.switches) {
                for state in OffCpuState::ALL {
                    let v = entry.value.off_cpu[state.index()];
                    if v.switches == 0 && v.nanos == 0 {
                        continue;
                    }
                    let mut value = vec![0; columns.len];
                    value[nanos] = saturate(v.nanos);
                    value[switches] = saturate(v.switches);
                    let mut label = labels.clone();
                    label.push(proto::Label {
                        key: state_key,
                        str: self.string(state.name()),
                        ..Default::default()
                    });
                    samples.push(proto::Sample {
                        location_id: location_id.clone(),
                        value,
                        label,
                    });
                }
            }
        }

        let (period_type, period) = match (on, profile.sampling_frequency()) {
            (true, Some(hz)) => (
                Some(self.value_type("cpu", "nanoseconds")),
                saturate(1_000_000_000 / hz),
            ),
            (true, None) => (Some(self.value_type("samples", "count")), 1),
            (false, _) => (Some(self.value_type("off_cpu", "nanoseconds")), 1),
        };
        let (time_nanos, duration_nanos) = match profile.time_range() {
            Some((start, end)) => (saturate(start), saturate(end.saturating_sub(start))),
            None => (0, 0),
        };
        let comment = vec![self.string("generated by rover")];
        proto::Profile {
            sample_type,
            sample: samples,
            mapping: self.mappings,
            location: self.locations,
            function: self.functions,
            string_table: self.strings,
            time_nanos,
            duration_nanos,
            period_type,
            period,
            comment,
            default_sample_type: 0,
        }
    }
}

fn saturate(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use rover_symbolize::{Origin, Symbolized};

    use super::*;
    use crate::profile::{Sample, SampleValue, test_frames};

    fn sym(name: &str, inlined: &[&str]) -> Symbolized {
        test_frames::sym_inlined(name, "/bin/app", Origin::File, inlined)
    }

    fn decode(profile: &Profile) -> proto::Profile {
        let mut gz = Vec::new();
        write_pprof(profile, &mut gz).unwrap();
        decode_raw(&gz)
    }

    fn decode_raw(gz: &[u8]) -> proto::Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut raw)
            .unwrap();
        proto::Profile::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn inlined_frames_share_one_location_innermost_first() {
        let mut p = Profile::new();
        p.set_build_id("/bin/app", "abcd");
        let user = [sym("outer", &["inner", "middle"]), sym("main", &[])];
        p.add_sample(&Sample {
            pid: 1,
            tid: 2,
            process_name: "app",
            comm: "t",
            kernel: &[],
            user: &user,
            value: SampleValue::OnCpu { samples: 5 },
        });
        let m = decode(&p);
        assert_eq!(m.string_table[0], "");
        assert_eq!(m.sample.len(), 1);
        assert_eq!(m.sample[0].value, [5]);
        assert_eq!(
            m.sample[0].location_id.len(),
            2,
            "inner+middle+outer is one location, main another"
        );
        let loc = &m.location[(m.sample[0].location_id[0] - 1) as usize];
        let name = |line: &proto::Line| {
            let f = &m.function[(line.function_id - 1) as usize];
            m.string_table[f.name as usize].as_str()
        };
        let names: Vec<_> = loc.line.iter().map(name).collect();
        assert_eq!(names, ["inner", "middle", "outer"]);
        let mapping = &m.mapping[(loc.mapping_id - 1) as usize];
        assert_eq!(m.string_table[mapping.build_id as usize], "abcd");
        assert_eq!(m.string_table[mapping.filename as usize], "/bin/app");
    }

    #[test]
    fn agent_labels_are_on_every_sample() {
        let mut p = Profile::new();
        for tid in [2, 3] {
            p.add_sample(&Sample {
                pid: 1,
                tid,
                process_name: "app",
                comm: "t",
                kernel: &[],
                user: &[sym("main", &[])],
                value: SampleValue::OnCpu { samples: 1 },
            });
        }
        let options = PprofOptions {
            labels: Labels::new().service("checkout").label("team", "pay"),
        };
        let mut gz = Vec::new();
        write_pprof_with(&p, &options, &mut gz).unwrap();
        let m = decode_raw(&gz);
        assert_eq!(m.sample.len(), 2);
        for sample in &m.sample {
            let labels: Vec<(&str, &str)> = sample
                .label
                .iter()
                .filter(|l| l.str != 0)
                .map(|l| {
                    (
                        m.string_table[l.key as usize].as_str(),
                        m.string_table[l.str as usize].as_str(),
                    )
                })
                .collect();
            assert_eq!(
                labels,
                [
                    ("comm", "t"),
                    ("process", "app"),
                    ("service.name", "checkout"),
                    ("team", "pay")
                ]
            );
        }
    }
}
