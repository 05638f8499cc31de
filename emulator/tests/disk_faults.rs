//! A disk that fills up (or turns read-only) under the hub: writes fail with a clear 5xx, nothing half-written
//! reaches the file, reads go on being served, and writes work again once the disk does, without a restart.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use iothub_emulator::HubError;
use iothub_emulator::auth::Policies;
use iothub_emulator::clock::SystemClock;
use iothub_emulator::domain::registry::{DeviceSpec, IfMatch};
use iothub_emulator::domain::twin::json::object_from_json;
use iothub_emulator::domain::twin::{TwinWrite, WriteMode};
use iothub_emulator::hub::Hub;
use iothub_emulator::store::Store;
use iothub_emulator::wire;
use redb::StorageBackend;
use serde_json::json;

/// An in-memory disk whose writes can be made to fail as a full disk (or one remounted read-only) does.
#[derive(Debug, Clone)]
struct FlakyDisk {
    data: Arc<Mutex<Vec<u8>>>,
    failing: Arc<AtomicBool>,
    failure: io::ErrorKind,
}

impl FlakyDisk {
    fn new(failure: io::ErrorKind) -> Self {
        Self { data: Arc::default(), failing: Arc::default(), failure }
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn check(&self) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) { Err(io::Error::from(self.failure)) } else { Ok(()) }
    }

    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StorageBackend for FlakyDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let data = self.bytes();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let source = data.get(start..start + out.len()).ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.bytes().resize(usize::try_from(len).map_err(io::Error::other)?, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let mut bytes = self.bytes();
        if bytes.len() < start + data.len() {
            bytes.resize(start + data.len(), 0);
        }
        bytes[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// A hub over the disk, reading what it holds.
fn open(disk: &FlakyDisk) -> Arc<Hub> {
    let backend = disk.clone();
    let (store, loaded) =
        Store::open_with_backend(move || redb::Database::builder().create_with_backend(backend.clone()))
            .expect("store");
    Arc::new(Hub::new("localhost".into(), Policies::generate(), Arc::new(SystemClock), store, loaded))
}

/// The twin document `GET /twins/{id}` answers.
fn twin_document(hub: &Hub, id: &str) -> Result<serde_json::Value, HubError> {
    hub.twin(id).map(|twin| serde_json::to_value(wire::twin::TwinDocument::of(&twin)).expect("JSON"))
}

fn desired(value: serde_json::Value) -> TwinWrite {
    TwinWrite { desired: Some(value.as_object().map(object_from_json)), tags: None }
}

#[tokio::test]
async fn a_full_disk_fails_writes_cleanly_and_the_hub_recovers_when_it_empties() {
    writes_fail_cleanly_and_recover(FlakyDisk::new(io::ErrorKind::StorageFull)).await;
}

#[tokio::test]
async fn a_disk_remounted_read_only_fails_writes_cleanly_and_the_hub_recovers_when_it_is_writable() {
    writes_fail_cleanly_and_recover(FlakyDisk::new(io::ErrorKind::ReadOnlyFilesystem)).await;
}

async fn writes_fail_cleanly_and_recover(disk: FlakyDisk) {
    let hub = open(&disk);
    hub.put_device("d1", &DeviceSpec::default(), None).await.expect("device");
    hub.write_twin("d1", &desired(json!({"n": 1})), WriteMode::Merge, Some(&IfMatch::Any)).await.expect("first patch");

    disk.fail(true);
    let err = hub
        .write_twin("d1", &desired(json!({"n": 2})), WriteMode::Merge, Some(&IfMatch::Any))
        .await
        .expect_err("disk full");
    assert!(matches!(&err, HubError::ServerError(text) if text.contains("could not be saved")), "{err}");
    assert_eq!((err.wire().status, err.wire().code), (500, "ServerError"));
    let twin = twin_document(&hub, "d1").expect("reads are still served");
    assert_eq!(twin["properties"]["desired"]["n"], 1, "the failed write was rolled back in memory too");
    assert!(matches!(hub.put_device("d2", &DeviceSpec::default(), None).await, Err(HubError::ServerError(_))));
    assert!(matches!(hub.get_device("d2"), Err(HubError::DeviceNotFound(_))), "a create that failed leaves nothing");
    assert!(matches!(
        hub.patch_reported("d1", &object_from_json(json!({"r": 1}).as_object().expect("map"))).await,
        Err(HubError::ServerError(_))
    ));
    assert_eq!(twin_document(&hub, "d1").expect("twin")["properties"]["reported"]["$version"], 1);

    disk.fail(false);
    hub.write_twin("d1", &desired(json!({"n": 3})), WriteMode::Merge, Some(&IfMatch::Any))
        .await
        .expect("the disk is back");
    hub.put_device("d3", &DeviceSpec::default(), None).await.expect("creates work again");
    hub.close().await;

    // What a restart reads: the acknowledged writes, and nothing of the failed ones.
    let again = open(&disk);
    assert_eq!(twin_document(&again, "d1").expect("twin")["properties"]["desired"]["n"], 3);
    assert!(again.get_device("d3").is_ok());
    assert!(matches!(again.get_device("d2"), Err(HubError::DeviceNotFound(_))));
    assert_eq!(twin_document(&again, "d1").expect("twin")["properties"]["reported"]["$version"], 1);
}

/// A change of several records (an Edge device deleted, its children orphaned; an Edge device created with its
/// system modules) that cannot be saved is undone whole: no record of it stays in memory, and a restart finds
/// the hierarchy as it was.
#[tokio::test]
async fn a_change_of_several_records_that_fails_is_undone_whole() {
    let disk = FlakyDisk::new(io::ErrorKind::StorageFull);
    let hub = open(&disk);
    let edge = DeviceSpec { iot_edge: Some(true), ..DeviceSpec::default() };
    let gateway = hub.put_device("gateway", &edge, None).await.expect("gateway");
    let scope = gateway.device_scope.clone().expect("an Edge scope");
    let leaf = DeviceSpec { device_scope: Some(scope.clone()), ..DeviceSpec::default() };
    hub.put_device("leaf", &leaf, None).await.expect("leaf");

    disk.fail(true);
    assert!(matches!(hub.delete_device("gateway", Some(&IfMatch::Any)).await, Err(HubError::ServerError(_))));
    assert!(hub.get_device("gateway").is_ok(), "the deletion was undone");
    let child = hub.get_device("leaf").expect("leaf");
    assert_eq!(child.parent_scopes, vec![scope.clone()], "and so was the orphaning");
    assert!(matches!(hub.put_device("edge2", &edge, None).await, Err(HubError::ServerError(_))));
    for key in ["edge2", "edge2/$edgeAgent", "edge2/$edgeHub"] {
        assert!(hub.get_device(key).is_err(), "{key} was undone with the create");
    }

    disk.fail(false);
    hub.close().await;
    let again = open(&disk);
    assert!(again.get_device("gateway/$edgeHub").is_ok());
    assert_eq!(again.get_device("leaf").expect("leaf").device_scope.as_deref(), Some(scope.as_str()));
    assert!(again.get_device("edge2").is_err());
}

/// Configurations on a failing disk: a configuration written or deleted while the disk fails is undone and
/// answered 500, what was applied stays, and once the disk is back the hub applies (and takes back) content
/// again; a restart finds only what was acknowledged.
#[tokio::test]
async fn configurations_fail_cleanly_on_a_full_disk_and_are_applied_again_when_it_empties() {
    use iothub_emulator::domain::configurations::{ConfigurationSpec, Content};
    let spec = |content: serde_json::Value| ConfigurationSpec {
        content: Content::new(content.as_object().cloned(), None, None),
        target_condition: "*".into(),
        ..ConfigurationSpec::default()
    };
    let desired_of = |hub: &Hub| twin_document(hub, "d1").expect("twin")["properties"]["desired"].clone();
    let eventually = |hub: Arc<Hub>, what: &'static str, done: fn(&serde_json::Value) -> bool| async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done(&twin_document(&hub, "d1").expect("twin")) {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let disk = FlakyDisk::new(io::ErrorKind::StorageFull);
    let hub = open(&disk);
    hub.start();
    hub.put_device("d1", &DeviceSpec::default(), None).await.expect("device");
    hub.put_configuration("kept", spec(json!({"properties.desired.kept": 1})), None).await.expect("configuration");
    eventually(hub.clone(), "applied", |twin| twin["properties"]["desired"]["kept"] == 1).await;

    disk.fail(true);
    let refused = hub.put_configuration("new", spec(json!({"properties.desired.new": 1})), None).await;
    assert!(matches!(refused, Err(HubError::ServerError(_))), "{refused:?}");
    assert!(matches!(hub.configuration("new"), Err(HubError::ConfigurationNotFound(_))), "the create was undone");
    assert!(matches!(hub.delete_configuration("kept", None).await, Err(HubError::ServerError(_))));
    assert!(hub.configuration("kept").is_ok(), "the deletion was undone");
    assert_eq!(desired_of(&hub)["kept"], 1, "what was applied stays");

    disk.fail(false);
    hub.delete_configuration("kept", None).await.expect("the disk is back");
    eventually(hub.clone(), "taken back", |twin| twin.get("configurations").is_none()).await;
    assert!(desired_of(&hub).get("kept").is_none());
    hub.close().await;

    let again = open(&disk);
    assert!(again.configurations(100).is_empty());
    let twin = twin_document(&again, "d1").expect("twin");
    assert!(twin.get("configurations").is_none() && twin["properties"]["desired"].get("kept").is_none());
}
