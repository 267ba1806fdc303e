//! Loading helpers common to both programs: the kernel's BTF, typed maps
//! taken out of a loaded object, and the maps every object shares.

use std::sync::OnceLock;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::{Btf, Ebpf};

use super::buffer::{DoubleBuffer, ErrorTracker};
use super::targets::{ResolvedTargets, check_pids, replace_pids};
use super::{Error, Targets};
use crate::error::ConfigError;

/// The kernel's BTF, parsed once: parsing it takes tens of milliseconds and
/// every attach needs it for CO-RE relocations.
pub(crate) fn kernel_btf() -> Result<&'static Btf, Error> {
    static BTF: OnceLock<Option<Btf>> = OnceLock::new();
    BTF.get_or_init(|| Btf::from_sys_fs().ok())
        .as_ref()
        .ok_or(Error::NoBtf)
}

/// Takes the map `name` out of `ebpf` as a typed map.
pub(crate) fn take_map<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    typed: impl FnOnce(Map) -> Result<M, MapError>,
) -> Result<M, Error> {
    let map = ebpf.take_map(name).ok_or_else(|| missing_in_object(name))?;
    typed(map).map_err(Error::map(name))
}

pub(crate) fn missing_in_object(name: &'static str) -> Error {
    Error::ObjectMismatch { name }
}

/// The maps of `common.h`: target pids, the active half, the error counters.
pub(crate) struct SharedMaps {
    pids: HashMap<MapData, u32, u8>,
    /// What the program follows: `None` for a pid list, else its kind.
    targets: Option<&'static str>,
    pid_capacity: u32,
    pub(crate) buffer: DoubleBuffer,
    pub(crate) errors: ErrorTracker,
}

impl SharedMaps {
    pub(crate) fn take(
        ebpf: &mut Ebpf,
        targets: &Targets,
        pid_capacity: u32,
        resolved: &ResolvedTargets,
    ) -> Result<Self, Error> {
        let mut pids = take_map(ebpf, "target_pids", HashMap::try_from)?;
        replace_pids(&mut pids, &resolved.pids)?;
        let active: Array<MapData, u32> = take_map(ebpf, "active_buffer", Array::try_from)?;
        let in_flight = take_map(ebpf, "in_flight", PerCpuArray::try_from)?;
        let errors: PerCpuArray<MapData, u64> = take_map(ebpf, "errors", PerCpuArray::try_from)?;
        Ok(SharedMaps {
            pids,
            targets: targets.kind_name(),
            pid_capacity,
            buffer: DoubleBuffer::new(active, in_flight),
            errors: ErrorTracker::new(errors),
        })
    }

    /// Replaces the target pids of a program attached with [`Targets::Pids`].
    pub(crate) fn set_targets(&mut self, pids: &[u32]) -> Result<(), Error> {
        if let Some(follows) = self.targets {
            return Err(ConfigError::NotAPidsSession(follows).into());
        }
        check_pids(pids, self.pid_capacity)?;
        replace_pids(&mut self.pids, pids)
    }
}
