//! Demangling of Rust (legacy and v0) and C++ (Itanium) symbol names, in the
//! form `addr2line -C` prints them.

use std::borrow::Cow;

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
        && let Ok(sym) = cpp_demangle::Symbol::new(name)
        && let Ok(text) = sym.demangle()
    {
        return Cow::Owned(text);
    }
    Cow::Borrowed(name)
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
    fn plain_and_broken_names_are_kept() {
        assert_eq!(demangle("main"), "main");
        assert_eq!(demangle("_Z"), "_Z");
        assert_eq!(demangle("_ZN"), "_ZN");
    }
}
