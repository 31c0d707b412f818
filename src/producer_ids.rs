//! Producer ids for idempotent producers (InitProducerId): unique across restarts, from
//! sled's persisted monotonic id generator in the metadata store.

#[derive(Clone)]
pub struct ProducerIds {
    db: sled::Db,
}

impl ProducerIds {
    pub fn new(db: sled::Db) -> ProducerIds {
        ProducerIds { db }
    }

    /// A producer id never handed out before (sled persists the counter).
    pub fn allocate(&self) -> Result<i64, sled::Error> {
        let id = self.db.generate_id()?;
        Ok((id & (i64::MAX as u64)) as i64)
    }
}
