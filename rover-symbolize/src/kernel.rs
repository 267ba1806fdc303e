//! Symbolizing kernel addresses through `/proc/kallsyms`, loaded once and
//! kept until evicted. Modules and BPF programs loaded later are picked up by
//! reloading when an address falls outside every known symbol — but not for
//! an address that a reload already failed to explain, and not more often
//! than [`KALLSYMS_RELOAD_INTERVAL`]: reading kallsyms costs tens of milliseconds,
//! and a profiler that met one unexplained address per window would
//! otherwise pay it every window.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::frame::{Module, Origin, Reason, Sym, Symbolized, Unknown};
use crate::kallsyms::KernelSymbols;
use crate::symbolizer::Symbolizer;

/// The module name of the core kernel, as perf prints it.
pub const KERNEL_MODULE: &str = "[kernel.kallsyms]";

/// The shortest time between two reloads of kallsyms caused by addresses it
/// did not explain.
pub const KALLSYMS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// How many addresses that a reload did not explain are remembered; past it
/// the set starts over (and those addresses may cause one more reload).
const MAX_UNEXPLAINED: usize = 1 << 16;

/// The loaded kernel symbol table.
#[derive(Default)]
pub(crate) struct KernelCache {
    state: Mutex<KernelState>,
}

#[derive(Default)]
struct KernelState {
    symbols: Option<Arc<KernelSymbols>>,
    loaded_at: Option<Instant>,
    /// Addresses still unknown after the last load.
    unexplained: HashSet<u64>,
}

impl KernelCache {
    /// The table to symbolize `addrs` with: the loaded one, or a fresh load
    /// when none is loaded, or when an address no load has failed on yet is
    /// unknown and the last load is old enough.
    fn get(&self, addrs: &[u64]) -> Result<Arc<KernelSymbols>, Error> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(symbols) = state.symbols.clone() {
            let stale = state
                .loaded_at
                .is_none_or(|at| at.elapsed() >= KALLSYMS_RELOAD_INTERVAL);
            let new_unknown = |a: &u64| {
                !state.unexplained.contains(a) && symbols.find(*a) == Err(Reason::NoSymbols)
            };
            if !stale || !addrs.iter().any(new_unknown) {
                return Ok(symbols);
            }
        }
        let symbols = Arc::new(KernelSymbols::load()?);
        if state.unexplained.len() > MAX_UNEXPLAINED {
            state.unexplained.clear();
        }
        state.unexplained.extend(
            addrs
                .iter()
                .filter(|&&a| symbols.find(a) == Err(Reason::NoSymbols)),
        );
        state.symbols = Some(Arc::clone(&symbols));
        state.loaded_at = Some(Instant::now());
        Ok(symbols)
    }

    pub(crate) fn clear(&self) {
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = KernelState::default();
    }
}

impl Symbolizer {
    pub(crate) fn symbolize_kernel(&self, addrs: &[u64]) -> Result<Vec<Symbolized>, Error> {
        let symbols = self.kernel.get(addrs)?;
        let core = Module::new(KERNEL_MODULE, None);
        let mut modules: Vec<(&str, Module)> = Vec::new();
        Ok(addrs
            .iter()
            .map(|&addr| match symbols.find(addr) {
                Ok(sym) => {
                    let (module, origin) = module_of(&mut modules, &core, sym.module);
                    Symbolized::Sym(Sym::unfiled(sym.name, module, origin, addr, sym.start))
                }
                Err(reason) => Symbolized::Unknown(Unknown {
                    module: Some(core.clone()),
                    origin: Some(Origin::Kernel),
                    address: addr,
                    file_offset: None,
                    vaddr: None,
                    reason,
                }),
            })
            .collect())
    }
}

/// The module of a kernel symbol, each kernel module's made once per batch.
fn module_of<'a>(
    modules: &mut Vec<(&'a str, Module)>,
    core: &Module,
    name: Option<&'a str>,
) -> (Module, Origin) {
    let Some(name) = name else {
        return (core.clone(), Origin::Kernel);
    };
    if let Some((_, m)) = modules.iter().find(|(n, _)| *n == name) {
        return (m.clone(), Origin::KernelModule);
    }
    let m = Module::new(format!("[{name}]"), None);
    modules.push((name, m.clone()));
    (m, Origin::KernelModule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unexplained_addresses_do_not_reload_kallsyms_again() {
        let cache = KernelCache::default();
        // Neither address is kernel text: 1 and a user-space address.
        let first = cache.get(&[1]).unwrap();
        let again = cache.get(&[1]).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "reloaded for a known failure");
        // A new unknown address inside the interval does not reload either
        // (the load time is reset so a stalled test machine cannot pass it).
        cache.state.lock().unwrap().loaded_at = Some(Instant::now());
        let within = cache.get(&[0x7fff_0000_1000]).unwrap();
        assert!(Arc::ptr_eq(&first, &within), "reloaded within the interval");
        // Past the interval, a new unknown address reloads once.
        cache
            .state
            .lock()
            .unwrap()
            .loaded_at
            .replace(Instant::now() - KALLSYMS_RELOAD_INTERVAL);
        let reloaded = cache.get(&[0x7fff_0000_2000]).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &reloaded),
            "no reload for a new address"
        );
        let known = cache.get(&[1, 0x7fff_0000_2000]).unwrap();
        assert!(Arc::ptr_eq(&reloaded, &known));
    }
}
