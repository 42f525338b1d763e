//! Building the registry at start from the definitions log: replay, the
//! rewrite that keeps what is live, and a read-only replay for exporting a
//! stopped broker's definitions.

use std::time::Instant;

use crate::routing::durable;
use crate::storage::definitions::{self, Definition, DefinitionsError, DefinitionsLog};
use crate::storage::DataDir;

use super::{Registry, Topology};

impl Registry {
    /// Reads the definitions log of `data_dir`, replays it (recovered queues
    /// owned by `recorded shard % shard_count`), rewrites it compacted with a
    /// new epoch, and returns a registry that records every durable change
    /// in it. Called once, before any shard runs.
    pub fn recover(data_dir: &DataDir, shard_count: usize) -> Result<Registry, DefinitionsError> {
        let started = Instant::now();
        let path = data_dir.definitions_path();
        let read = definitions::read(&path).map_err(|e| DefinitionsError::Read(path.clone(), e))?;
        let epoch =
            read.epoch_last.checked_add(1).ok_or_else(|| DefinitionsError::EpochsExhausted(path.clone()))?;
        // An initialised log says which vhosts and users exist (a deleted
        // "/" stays deleted); one that is not (a new data directory, one
        // written before access was recorded, or a first start that did not
        // finish) starts with "/" as it always did, and gets the defaults.
        let first_start = !durable::is_initialised(&read.definitions);
        let mut registry = Registry::empty(epoch, shard_count, first_start);
        let mut topology = Topology::clone(&registry.load());
        let skipped = durable::replay(&registry, &mut topology, &read.definitions);
        let mut live = durable::definitions_of(&topology);
        if !first_start {
            live.insert(0, Definition::AccessInitialised);
        }
        live.push(Definition::Epoch(epoch));
        let log = match DefinitionsLog::rewrite(&path, &live) {
            Ok(log) => log,
            // A full disk must not keep the broker from starting: keep the
            // log as it is and append to it (the epoch too, if it fits: the
            // next start derives a higher one from the queue ids anyway).
            Err(e) => {
                let file = path.display();
                tracing::warn!(error = %e, %file, "cannot compact the definitions log; appending to it");
                let _ = std::fs::remove_file(path.with_extension("log.tmp"));
                let mut log = DefinitionsLog::open_append(&path, read.bytes)
                    .map_err(|e| DefinitionsError::Write(path.clone(), e))?;
                if let Err(e) = log.append(&[Definition::Epoch(epoch)]) {
                    tracing::warn!(error = %e, "cannot record the new epoch in the definitions log");
                }
                log
            }
        };
        let counts = durable::Counts::of(&live);
        registry.recovered = durable::queues_of(&topology);
        registry.writer.get_mut().unwrap_or_else(|e| e.into_inner()).log = Some(log);
        let (vhosts, users) = (topology.access.vhosts.len(), topology.access.users.len());
        registry.publish(topology);
        tracing::info!(
            file = %path.display(),
            epoch,
            vhosts,
            users,
            exchanges = counts.exchanges,
            queues = counts.queues,
            bindings = counts.bindings,
            records_read = read.definitions.len(),
            records_damaged = read.damaged,
            records_not_applicable = skipped,
            bytes_read = read.bytes,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "definitions recovered"
        );
        Ok(registry)
    }

    /// The definitions of `data_dir` replayed into a registry that records
    /// nothing and leaves the log as it is (to export them while no broker
    /// runs).
    pub fn read_only(data_dir: &DataDir) -> Result<Registry, DefinitionsError> {
        let path = data_dir.definitions_path();
        let read = definitions::read(&path).map_err(|e| DefinitionsError::Read(path.clone(), e))?;
        let registry = Registry::empty(0, 1, !durable::is_initialised(&read.definitions));
        let mut topology = Topology::clone(&registry.load());
        durable::replay(&registry, &mut topology, &read.definitions);
        registry.publish(topology);
        Ok(registry)
    }

    /// Every queue of the snapshot is made by its shard at start: after an
    /// import, the imported queues (durable or not) join the recovered ones.
    pub fn place_queues_at_start(&mut self) {
        self.recovered = durable::all_queues_of(&self.load());
    }
}
