//! Frozen archive documents (RFC 5005 archived feeds): the bytes of a
//! complete day of a feed, written once and served as they are from then
//! on, whatever later happens to the entries in it. Kept under their day,
//! so retention drops them by age.

use chrono::NaiveDate;

use super::codec;
use super::{Store, StoreError};

/// `archives` key: the day (`YYYY-MM-DD`, which sorts as the day does),
/// a zero byte, then the document's name (its path and query).
fn archive_key(day: NaiveDate, name: &str) -> Vec<u8> {
    let mut key = day.format("%Y-%m-%d").to_string().into_bytes();
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

impl Store {
    /// The frozen archive document `name` of `day`, if it was frozen.
    pub fn archive(&self, day: NaiveDate, name: &str) -> Result<Option<String>, StoreError> {
        // An undecodable one is rendered (and frozen) again rather than
        // failing.
        let key = archive_key(day, name);
        self.decoded(&self.t.archives, "archives", &key, codec::decode_archive)
    }

    /// Freezes `doc` as archive document `name` of `day`, durably (the
    /// store is flushed); returns what is frozen under that name, which is
    /// an earlier freeze's when there was one.
    pub fn freeze_archive(
        &self,
        day: NaiveDate,
        name: &str,
        doc: String,
    ) -> Result<String, StoreError> {
        let key = archive_key(day, name);
        let value = codec::encode_archive(&doc).map_err(|r| self.corrupt("archives", r))?;
        {
            let _writer = self.lock_writer();
            if let Some(bytes) = self.t.archives.get(&key).map_err(|e| self.sled_err(e))? {
                if let Ok(frozen) = codec::decode_archive(&bytes) {
                    return Ok(frozen);
                }
            }
            self.t
                .archives
                .insert(key, value)
                .map_err(|e| self.sled_err(e))?;
        }
        self.flush_blocking()?;
        Ok(doc)
    }

    /// Removes the archive documents of days before `first_kept`; returns
    /// how many went. Bounded batches, one hold of the writer lock each.
    pub(super) fn prune_archives(&self, first_kept: NaiveDate) -> Result<usize, StoreError> {
        let end = first_kept.format("%Y-%m-%d").to_string().into_bytes();
        let mut removed = 0;
        loop {
            let mut keys = Vec::new();
            for item in self
                .t
                .archives
                .range(..end.as_slice())
                .take(super::retention::PRUNE_BATCH)
            {
                let (key, _) = item.map_err(|e| self.sled_err(e))?;
                keys.push(key);
            }
            if keys.is_empty() {
                return Ok(removed);
            }
            let _writer = self.lock_writer();
            let mut batch = sled::Batch::default();
            for key in &keys {
                batch.remove(key.clone());
            }
            self.t
                .archives
                .apply_batch(batch)
                .map_err(|e| self.sled_err(e))?;
            removed += keys.len();
        }
    }
}
