//! Built tables kept across services: an agent that starts session after
//! session (continuous profiling, start/stop cycles) would otherwise parse
//! the same `.eh_frame`s again for each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::build::UnwindTable;
use crate::process::TableKey;
use crate::row::Row;

/// Built tables by key, shared by every [`Unwinder`](crate::Unwinder)
/// given it (cloning shares it), least recently used evicted past a bound
/// in bytes of rows. A table larger than the bound is not kept.
///
/// ```
/// let cache = rover_unwind::TableCache::new(64 << 20);
/// assert_eq!(cache.stats().tables, 0);
/// ```
#[derive(Clone, Debug)]
pub struct TableCache {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    tables: HashMap<TableKey, (Arc<[Row]>, u64)>,
    bytes: usize,
    limit: usize,
    tick: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
}

/// What a [`TableCache`] holds and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Tables kept.
    pub tables: usize,
    /// Their rows' bytes.
    pub bytes: usize,
    /// The bound in bytes.
    pub limit: usize,
    /// Tables found kept rather than built.
    pub hits: u64,
    /// Tables looked for and not kept.
    pub misses: u64,
    /// Tables dropped to make room.
    pub evictions: u64,
}

impl TableCache {
    /// A cache holding at most `limit_bytes` of rows (16 bytes a row).
    pub fn new(limit_bytes: usize) -> Self {
        TableCache {
            inner: Arc::new(Mutex::new(Inner {
                limit: limit_bytes,
                ..Inner::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The rows of `key`'s table, if kept.
    pub fn get(&self, key: &TableKey) -> Option<Arc<[Row]>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        match inner.tables.get_mut(key) {
            Some((rows, used)) => {
                *used = tick;
                let rows = Arc::clone(rows);
                inner.hits += 1;
                Some(rows)
            }
            None => {
                inner.misses += 1;
                None
            }
        }
    }

    /// Keeps `table`'s rows under `key`, evicting the least recently used
    /// tables as needed; returns the rows.
    pub fn insert(&self, key: TableKey, table: &UnwindTable) -> Arc<[Row]> {
        let rows: Arc<[Row]> = Arc::from(table.rows());
        let size = rows.len() * Row::SIZE;
        let mut inner = self.lock();
        if size > inner.limit {
            return rows;
        }
        if let Some((old, _)) = inner.tables.remove(&key) {
            inner.bytes -= old.len() * Row::SIZE;
        }
        while inner.bytes + size > inner.limit {
            let Some(oldest) = inner
                .tables
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| *key)
            else {
                break;
            };
            if let Some((old, _)) = inner.tables.remove(&oldest) {
                inner.bytes -= old.len() * Row::SIZE;
                inner.evictions += 1;
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.bytes += size;
        inner.tables.insert(key, (Arc::clone(&rows), tick));
        rows
    }

    /// What it holds and did.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            tables: inner.tables.len(),
            bytes: inner.bytes,
            limit: inner.limit,
            hits: inner.hits,
            misses: inner.misses,
            evictions: inner.evictions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{Cfa, Rbp};

    fn key(n: u64) -> TableKey {
        TableKey::Vdso { hash: n, size: n }
    }

    fn table(rows: usize) -> UnwindTable {
        UnwindTable::from_rows_for_tests(
            (0..rows as u64)
                .map(|pc| Row::new(pc * 16, Cfa::Rsp(8), Rbp::Unchanged))
                .collect(),
        )
    }

    #[test]
    fn keeps_tables_and_evicts_the_least_recently_used_past_its_bound() {
        let cache = TableCache::new(10 * Row::SIZE);
        cache.insert(key(1), &table(4));
        cache.insert(key(2), &table(4));
        assert_eq!(cache.get(&key(1)).map(|r| r.len()), Some(4));
        // 1 was used last: 2 goes to make room for 3.
        cache.insert(key(3), &table(4));
        assert!(cache.get(&key(2)).is_none());
        assert!(cache.get(&key(1)).is_some() && cache.get(&key(3)).is_some());
        // Larger than the bound: returned, not kept.
        assert_eq!(cache.insert(key(4), &table(11)).len(), 11);
        assert!(cache.get(&key(4)).is_none());
        let stats = cache.stats();
        assert_eq!(
            (stats.tables, stats.bytes, stats.evictions),
            (2, 8 * Row::SIZE, 1)
        );
        assert_eq!(stats.hits, 3);
    }
}
