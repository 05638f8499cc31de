//! Bulk identity operations (`POST /devices`): each item applied through the same registry and twin operations a
//! single request uses, one after another, each durable before the next, its failure recorded beside it.

use super::Hub;
use crate::domain::bulk::{BulkFailure, BulkItem, ImportMode};
use crate::domain::registry::{IfMatch, identity_key};
use crate::domain::twin::WriteMode;
use crate::error::HubError;

impl Hub {
    /// Applies `items` in order; the failures, in the order of their items (none: all succeeded).
    pub async fn bulk_registry(&self, items: &[BulkItem]) -> Vec<BulkFailure> {
        let mut failures = Vec::new();
        for item in items {
            if let Err(error) = self.apply_bulk_item(item).await {
                failures.push(BulkFailure {
                    device_id: item.device_id.clone(),
                    module_id: item.module_id.clone(),
                    mode: item.mode,
                    code: error.wire().number,
                    message: error.to_string(),
                });
            }
        }
        failures
    }

    async fn apply_bulk_item(&self, item: &BulkItem) -> Result<(), HubError> {
        let key = identity_key(&item.device_id, item.module_id.as_deref());
        let exists = self.get_device(&key).is_ok();
        let identity_etag = IfMatch::Etag(item.etag.clone().unwrap_or_default());
        match item.mode {
            ImportMode::Create => self.put_identity(item, None).await?,
            ImportMode::Update => self.put_identity(item, Some(&IfMatch::Any)).await?,
            ImportMode::UpdateIfMatchETag => self.put_identity(item, Some(&identity_etag)).await?,
            ImportMode::CreateOrUpdate => self.put_identity(item, exists.then_some(&IfMatch::Any)).await?,
            ImportMode::CreateOrUpdateIfMatchETag => self.put_identity(item, exists.then_some(&identity_etag)).await?,
            ImportMode::Delete => return self.delete_identity(item, &IfMatch::Any).await,
            ImportMode::DeleteIfMatchETag => return self.delete_identity(item, &identity_etag).await,
            ImportMode::UpdateTwin | ImportMode::UpdateTwinIfMatchETag => {
                self.get_device(&key)?;
            }
        }
        let Some(twin) = item.twin.as_ref().filter(|_| item.mode.writes_twin()) else { return Ok(()) };
        let (mode, condition) = match item.mode {
            ImportMode::UpdateTwin => (WriteMode::Replace, IfMatch::Any),
            ImportMode::UpdateTwinIfMatchETag => {
                (WriteMode::Replace, IfMatch::Etag(item.twin_etag.clone().unwrap_or_default()))
            }
            _ => (WriteMode::Merge, IfMatch::Any),
        };
        self.write_twin(&key, twin, mode, Some(&condition)).await?;
        Ok(())
    }

    async fn put_identity(&self, item: &BulkItem, if_match: Option<&IfMatch>) -> Result<(), HubError> {
        match &item.module_id {
            Some(module_id) => self.put_module(&item.device_id, module_id, &item.spec, if_match).await.map(|_| ()),
            None => self.put_device(&item.device_id, &item.spec, if_match).await.map(|_| ()),
        }
    }

    async fn delete_identity(&self, item: &BulkItem, if_match: &IfMatch) -> Result<(), HubError> {
        match &item.module_id {
            Some(module_id) => self.delete_module(&item.device_id, module_id, Some(if_match)).await,
            None => self.delete_device(&item.device_id, Some(if_match)).await,
        }
    }
}
