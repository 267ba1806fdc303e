//! Symbolizing kernel addresses through `/proc/kallsyms`, loaded once and
//! kept until evicted (modules loaded later are picked up by reloading when
//! an address falls outside every known symbol).

use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::frame::{Reason, Sym, Symbolized, Unknown};
use crate::kallsyms::KernelSymbols;
use crate::symbolizer::Symbolizer;

/// The module name of the core kernel, as perf prints it.
pub const KERNEL_MODULE: &str = "[kernel.kallsyms]";

/// The loaded kernel symbol table.
#[derive(Default)]
pub(crate) struct KernelCache {
    symbols: Mutex<Option<Arc<KernelSymbols>>>,
}

impl KernelCache {
    fn get(&self, reload: bool) -> Result<Arc<KernelSymbols>, Error> {
        let mut slot = self
            .symbols
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(symbols) = slot.as_ref().filter(|_| !reload) {
            return Ok(Arc::clone(symbols));
        }
        let symbols = Arc::new(KernelSymbols::load()?);
        *slot = Some(Arc::clone(&symbols));
        Ok(symbols)
    }

    pub(crate) fn clear(&self) {
        *self
            .symbols
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

impl Symbolizer {
    pub(crate) fn symbolize_kernel(&self, addrs: &[u64]) -> Result<Vec<Symbolized>, Error> {
        let mut symbols = self.kernel.get(false)?;
        if addrs
            .iter()
            .any(|&a| symbols.find(a) == Err(Reason::NoSymbols))
        {
            symbols = self.kernel.get(true)?;
        }
        let core: Arc<str> = Arc::from(KERNEL_MODULE);
        let mut modules: Vec<Arc<str>> = Vec::new();
        let mut module_name = |name: Option<&str>| -> Arc<str> {
            let Some(name) = name else {
                return Arc::clone(&core);
            };
            let bracketed = format!("[{name}]");
            if let Some(m) = modules.iter().find(|m| ***m == *bracketed) {
                return Arc::clone(m);
            }
            let m: Arc<str> = Arc::from(bracketed);
            modules.push(Arc::clone(&m));
            m
        };
        Ok(addrs
            .iter()
            .map(|&addr| match symbols.find(addr) {
                Ok(sym) => Symbolized::Sym(Sym {
                    name: Arc::from(sym.name),
                    module: module_name(sym.module),
                    module_offset: addr,
                    sym_addr: sym.start,
                    location: None,
                    inlined: Vec::new(),
                }),
                Err(reason) => Symbolized::Unknown(Unknown {
                    module: Some(Arc::clone(&core)),
                    module_offset: addr,
                    reason,
                }),
            })
            .collect())
    }
}
