//! Interning tables: each distinct value is stored once and named by a dense
//! `u32` index, so a profile holds ids instead of repeated strings and frames.
//!
//! The hash indexes hold only ids (`HashTable<u32>`), hashing the stored
//! value on demand; that keeps the index at a few bytes per entry instead of
//! a second copy of every key.

use std::hash::{BuildHasher, Hash};

use hashbrown::{DefaultHashBuilder, HashTable, hash_table::Entry};

/// Converts a table length into the next id. Tables past `u32::MAX` entries
/// are far beyond any profile (4 billion distinct stacks); saturating keeps
/// this panic-free, and the last id then aliases, which is the least harm.
fn next_id(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Interns whole values (frames, threads, entry keys).
#[derive(Clone)]
pub(crate) struct Interner<T> {
    items: Vec<T>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl<T: Hash + Eq> Interner<T> {
    /// Returns the id of `item`, storing it if it is new.
    pub(crate) fn intern(&mut self, item: T) -> u32 {
        self.intern_with_flag(item).0
    }

    /// Like [`Interner::intern`], also saying whether the item was new.
    pub(crate) fn intern_with_flag(&mut self, item: T) -> (u32, bool) {
        let hash = self.hasher.hash_one(&item);
        let Self {
            items,
            index,
            hasher,
        } = self;
        match index.entry(
            hash,
            |&id| items[id as usize] == item,
            |&id| hasher.hash_one(&items[id as usize]),
        ) {
            Entry::Occupied(slot) => (*slot.get(), false),
            Entry::Vacant(slot) => {
                let id = next_id(items.len());
                items.push(item);
                slot.insert(id);
                (id, true)
            }
        }
    }

    pub(crate) fn get(&self, id: u32) -> Option<&T> {
        self.items.get(id as usize)
    }

    pub(crate) fn items(&self) -> &[T] {
        &self.items
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.items.capacity() * size_of::<T>() + self.index.allocation_size()
    }
}

/// Interns slices (stacks of frame ids) in one arena: a stack costs its ids
/// plus one `(start, len)` span, with no allocation of its own.
#[derive(Clone)]
pub(crate) struct SliceInterner<T> {
    arena: Vec<T>,
    spans: Vec<(u32, u32)>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl<T> Default for SliceInterner<T> {
    fn default() -> Self {
        Self {
            arena: Vec::new(),
            spans: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl<T: Hash + Eq + Copy> SliceInterner<T> {
    pub(crate) fn intern(&mut self, slice: &[T]) -> u32 {
        let hash = self.hasher.hash_one(slice);
        let Self {
            arena,
            spans,
            index,
            hasher,
        } = self;
        let at = |spans: &[(u32, u32)], id: u32| {
            let (start, len) = spans[id as usize];
            start as usize..start as usize + len as usize
        };
        match index.entry(
            hash,
            |&id| arena[at(spans, id)] == *slice,
            |&id| hasher.hash_one(&arena[at(spans, id)]),
        ) {
            Entry::Occupied(slot) => *slot.get(),
            Entry::Vacant(slot) => {
                let id = next_id(spans.len());
                let start = next_id(arena.len());
                arena.extend_from_slice(slice);
                spans.push((start, next_id(slice.len())));
                slot.insert(id);
                id
            }
        }
    }

    pub(crate) fn get(&self, id: u32) -> Option<&[T]> {
        let &(start, len) = self.spans.get(id as usize)?;
        self.arena
            .get(start as usize..start as usize + len as usize)
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.arena.capacity() * size_of::<T>()
            + self.spans.capacity() * size_of::<(u32, u32)>()
            + self.index.allocation_size()
    }
}

/// Interns strings as byte slices of one [`SliceInterner`]; id 0 is always
/// the empty string so "absent" needs no `Option`.
#[derive(Clone)]
pub(crate) struct StringTable {
    bytes: SliceInterner<u8>,
}

impl Default for StringTable {
    fn default() -> Self {
        let mut table = Self {
            bytes: SliceInterner::default(),
        };
        table.intern("");
        table
    }
}

impl StringTable {
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        self.bytes.intern(s.as_bytes())
    }

    /// The string for `id`; unknown ids read as "" rather than panicking.
    /// Every stored slice came from a `&str`, so the UTF-8 check never fails.
    pub(crate) fn get(&self, id: u32) -> &str {
        self.bytes
            .get(id)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or("")
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.bytes.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_stored_once_and_empty_is_zero() {
        let mut t = StringTable::default();
        assert_eq!(t.intern(""), 0);
        let a = t.intern("main");
        let b = t.intern("work");
        assert_eq!(t.intern("main"), a);
        assert_ne!(a, b);
        assert_eq!(t.get(a), "main");
        assert_eq!(t.get(b), "work");
        assert_eq!(t.get(999), "");
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn slices_share_one_arena() {
        let mut t = SliceInterner::<u32>::default();
        let a = t.intern(&[1, 2, 3]);
        let b = t.intern(&[1, 2]);
        assert_eq!(t.intern(&[1, 2, 3]), a);
        assert_eq!(t.get(a), Some(&[1, 2, 3][..]));
        assert_eq!(t.get(b), Some(&[1, 2][..]));
        assert_eq!(t.get(7), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn values_intern_once() {
        let mut t = Interner::<(u32, u32)>::default();
        let (a, new) = t.intern_with_flag((1, 2));
        assert!(new);
        assert_eq!(t.intern_with_flag((1, 2)), (a, false));
        assert_eq!(t.intern((2, 1)), a + 1);
        assert_eq!(t.get(a), Some(&(1, 2)));
        assert_eq!(t.len(), 2);
    }
}
