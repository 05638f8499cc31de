//! Bulk identity operations (`POST /devices`, up to 100 items): the import modes, and an item's outcome. Each item
//! is applied on its own, as the hub does: one item's failure is reported beside it and stops none of the others.
//! Facts and sources: docs/research/bulk-registry.md.

use super::registry::DeviceSpec;
use super::twin::TwinWrite;

/// Most items one bulk call takes (more is 413 TooManyDevices).
pub const MAX_BULK_ITEMS: usize = 100;

/// What a bulk item asks for (`importMode`; a missing one is `createOrUpdate`, which C# leaves out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    CreateOrUpdate,
    Create,
    Update,
    UpdateIfMatchETag,
    CreateOrUpdateIfMatchETag,
    Delete,
    DeleteIfMatchETag,
    UpdateTwin,
    UpdateTwinIfMatchETag,
}

impl ImportMode {
    const ALL: [ImportMode; 9] = [
        Self::CreateOrUpdate,
        Self::Create,
        Self::Update,
        Self::UpdateIfMatchETag,
        Self::CreateOrUpdateIfMatchETag,
        Self::Delete,
        Self::DeleteIfMatchETag,
        Self::UpdateTwin,
        Self::UpdateTwinIfMatchETag,
    ];

    /// The mode `text` names, case-insensitively (Node sends `Update`, `Delete`; C# `update`, `delete`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.as_str().eq_ignore_ascii_case(text))
    }

    /// The hub's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateOrUpdate => "createOrUpdate",
            Self::Create => "create",
            Self::Update => "update",
            Self::UpdateIfMatchETag => "updateIfMatchETag",
            Self::CreateOrUpdateIfMatchETag => "createOrUpdateIfMatchETag",
            Self::Delete => "delete",
            Self::DeleteIfMatchETag => "deleteIfMatchETag",
            Self::UpdateTwin => "updateTwin",
            Self::UpdateTwinIfMatchETag => "updateTwinIfMatchETag",
        }
    }

    /// Whether the twin members of the item (`tags`, `properties.desired`) are written.
    pub fn writes_twin(self) -> bool {
        matches!(
            self,
            Self::CreateOrUpdate
                | Self::Create
                | Self::CreateOrUpdateIfMatchETag
                | Self::UpdateTwin
                | Self::UpdateTwinIfMatchETag
        )
    }
}

/// One item of a bulk call, read.
#[derive(Debug, Clone)]
pub struct BulkItem {
    pub device_id: String,
    pub module_id: Option<String>,
    pub mode: ImportMode,
    /// `eTag`: the identity's etag, for the `*IfMatchETag` identity modes.
    pub etag: Option<String>,
    /// `twinETag`: the twin's etag, for `updateTwinIfMatchETag`.
    pub twin_etag: Option<String>,
    pub spec: DeviceSpec,
    pub twin: Option<TwinWrite>,
}

/// Why one item failed: the hub's numeric error code and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkFailure {
    pub device_id: String,
    pub module_id: Option<String>,
    pub mode: ImportMode,
    pub code: u32,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_whatever_their_case_and_print_as_the_hub_spells_them() {
        assert_eq!(ImportMode::parse("Update"), Some(ImportMode::Update));
        assert_eq!(ImportMode::parse("DELETEIFMATCHETAG"), Some(ImportMode::DeleteIfMatchETag));
        assert_eq!(ImportMode::parse("createorupdate").map(ImportMode::as_str), Some("createOrUpdate"));
        assert_eq!(ImportMode::parse("upsert"), None);
    }
}
