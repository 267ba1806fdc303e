//! The GNU build id of an ELF file, as a type rather than a hex string.

use std::fmt;
use std::sync::Arc;

/// The GNU build id of an ELF file (its `NT_GNU_BUILD_ID` note): the bytes
/// `readelf -n` prints, shared, so a copy costs a reference count.
///
/// `Display` prints it in lower-case hex, as `readelf -n` and the
/// `.build-id/` directories of debug files spell it.
///
/// ```
/// use rover_symbolize::BuildId;
///
/// let id = BuildId::new(&[0xde, 0xad, 0x01]);
/// assert_eq!(id.to_string(), "dead01");
/// assert_eq!(id.as_bytes(), &[0xde, 0xad, 0x01]);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuildId(Arc<[u8]>);

impl BuildId {
    /// A build id made of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        BuildId(Arc::from(bytes))
    }

    /// The raw bytes of the note.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::BuildId;

    #[test]
    fn hex_is_lower_case_and_keeps_leading_zeroes() {
        let id = BuildId::new(&[0x00, 0x0a, 0xff]);
        assert_eq!(id.to_string(), "000aff");
        assert_eq!(format!("{id:?}"), "BuildId(000aff)");
        assert_eq!(BuildId::new(&[]).to_string(), "");
    }
}
