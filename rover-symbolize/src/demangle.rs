//! Demangling of Rust (legacy and v0) and C++ (Itanium) symbol names, in the
//! form `addr2line -C` prints them.
//!
//! C++ names go first to the C++ runtime's own demangler, `__cxa_demangle`
//! from `libstdc++.so.6`, loaded at run time when the system has it: it is
//! the same libiberty code binutils prints with, while the pure-Rust
//! `cpp_demangle` differs from it on reference collapsing in packs, pack
//! expansions and some `enable_if` signatures (and fails on a few names).
//! Where libstdc++ is absent (static or musl builds), or refuses a name,
//! `cpp_demangle` is used; nothing is linked at build time.

use std::borrow::Cow;
use std::ffi::{CStr, CString, c_char, c_int};
use std::sync::OnceLock;

/// Demangles `name` if it is a mangled Rust or C++ name; other names come back
/// unchanged. Rust names lose their hash (`foo::bar`, not `foo::bar::h0123…`),
/// as binutils prints them.
pub fn demangle(name: &str) -> Cow<'_, str> {
    if (name.starts_with("_R") || name.starts_with("_ZN"))
        && let Ok(sym) = rustc_demangle::try_demangle(name)
    {
        let full = sym.to_string();
        let short = format!("{sym:#}");
        // A legacy Rust name carries a hash that `{:#}` drops; without one,
        // `_ZN…E` is just as well a C++ name, left to the C++ side.
        if name.starts_with("_R") || full != short {
            return Cow::Owned(short);
        }
    }
    if name.starts_with("_Z")
        && let Some(text) = cxa_demangle(name)
    {
        return Cow::Owned(text);
    }
    if name.starts_with("_Z")
        && let Ok(sym) = cpp_demangle::Symbol::new(name)
        && let Ok(text) = sym.demangle()
    {
        return Cow::Owned(text);
    }
    Cow::Borrowed(name)
}

/// Mangled names longer than this skip `__cxa_demangle`, whose recursion has
/// no depth limit, and go to `cpp_demangle`, which has one; real names,
/// compressed by substitutions, stay far below it.
const CXA_MAX_MANGLED: usize = 4096;

/// `char *__cxa_demangle(const char *mangled, char *buf, size_t *len, int *status)`
type CxaDemangle =
    unsafe extern "C" fn(*const c_char, *mut c_char, *mut usize, *mut c_int) -> *mut c_char;

/// The C++ runtime's demangler, looked up once per process.
fn cxa_demangler() -> Option<CxaDemangle> {
    static DEMANGLER: OnceLock<Option<CxaDemangle>> = OnceLock::new();
    *DEMANGLER.get_or_init(|| {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is never
        // closed, so the function pointer stays valid for the process.
        unsafe {
            let handle = libc::dlopen(
                c"libstdc++.so.6".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_LOCAL,
            );
            if handle.is_null() {
                return None;
            }
            let sym = libc::dlsym(handle, c"__cxa_demangle".as_ptr());
            if sym.is_null() {
                return None;
            }
            Some(std::mem::transmute::<*mut libc::c_void, CxaDemangle>(sym))
        }
    })
}

/// Demangles a C++ name with `__cxa_demangle`, if the runtime is there and
/// takes the name.
fn cxa_demangle(name: &str) -> Option<String> {
    if name.len() > CXA_MAX_MANGLED {
        return None;
    }
    let demangler = cxa_demangler()?;
    let mangled = CString::new(name).ok()?;
    let mut status: c_int = -1;
    // SAFETY: `mangled` is NUL-terminated; a null buffer asks the runtime to
    // malloc the result, which is freed below once copied.
    unsafe {
        let out = demangler(
            mangled.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut status,
        );
        if out.is_null() {
            return None;
        }
        let text = (status == 0).then(|| CStr::from_ptr(out).to_string_lossy().into_owned());
        libc::free(out.cast());
        text
    }
}

/// Whether `name` is a mangled (linkage) name rather than a plain one.
pub(crate) fn is_mangled(name: &str) -> bool {
    name.starts_with("_Z") || name.starts_with("_R")
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn rust_legacy_and_v0() {
        assert_eq!(
            demangle("_ZN4core3fmt5write17h0123456789abcdefE"),
            "core::fmt::write"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
    }

    #[test]
    fn cpp_names() {
        assert_eq!(demangle("_Z3addii"), "add(int, int)");
        assert_eq!(demangle("_ZN2ns3fooEv"), "ns::foo()");
    }

    #[test]
    fn cpp_names_as_binutils_prints_them() {
        // Expected texts are what binutils' c++filt prints. cpp_demangle
        // fails on the enable_if return type of the second name.
        assert_eq!(demangle("_Z3fwdIJRiEEvDpOT_"), "void fwd<int&>(int&)");
        assert_eq!(
            demangle(
                "_ZSt9__fill_a1IPN3geo4Vec2IlEES2_EN9__gnu_cxx11__enable_ifIXntsrSt11__is_scalarIT0_E7__valueEvE6__typeET_SB_RKS7_"
            ),
            "__gnu_cxx::__enable_if<!std::__is_scalar<geo::Vec2<long> >::__value, void>::__type \
             std::__fill_a1<geo::Vec2<long>*, geo::Vec2<long> >(geo::Vec2<long>*, geo::Vec2<long>*, geo::Vec2<long> const&)"
        );
    }

    #[test]
    fn plain_and_broken_names_are_kept() {
        assert_eq!(demangle("main"), "main");
        assert_eq!(demangle("_Z"), "_Z");
        assert_eq!(demangle("_ZN"), "_ZN");
    }
}
