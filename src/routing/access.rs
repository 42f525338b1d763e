//! Changes to users, permissions and vhost settings ([`crate::access`]),
//! made under the registry's writer lock like every topology change, so a
//! shard that sees a snapshot sees the access of the same moment.
//!
//! Not yet durable: the definitions log does not record these changes.

use std::sync::Arc;

use crate::access::{AccessChange, AccessError};

use super::topology::Registry;

impl Registry {
    /// Applies one access change and publishes the new snapshot; on error
    /// nothing changes.
    pub fn change_access(&self, change: &AccessChange) -> Result<(), AccessError> {
        self.mutate(|topology| {
            let mut access = crate::access::Access::clone(&topology.access);
            access.apply(change)?;
            topology.access = Arc::new(access);
            Ok(())
        })
    }
}
