//! openraft's storage conformance suite against the real write-ahead-log store and sled state
//! machine (each test case gets a fresh directory).

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use ringkv_server::shard::log_store::LogStore;
use ringkv_server::shard::state_machine::StateMachine;
use ringkv_server::storage::flush::FlushCoordinator;
use ringkv_server::storage::wal::Wal;
use ringkv_server::typ::TypeConfig;
use tempfile::TempDir;

struct SledBuilder;

fn storage_err(e: impl std::error::Error + 'static) -> StorageError<TypeConfig> {
    use openraft::type_config::TypeConfigExt;
    StorageError::read(TypeConfig::err_from_error(&e))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(storage_err)?;
        let db_dir = dir.path().join("db");
        let db = sled::Config::new()
            .path(&db_dir)
            .open()
            .map_err(storage_err)?;
        let health = ringkv_server::storage::health::StorageHealth::default();
        let flush = FlushCoordinator::start(db.clone(), &db_dir, &health).map_err(storage_err)?;
        let wal = Wal::open(&dir.path().join("wal"), &health).map_err(storage_err)?;
        let log = LogStore::open(&wal, 0).map_err(storage_err)?;
        let sm = StateMachine::open(&db, 0, dir.path().join("snap"), flush).map_err(storage_err)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_storage_passes_openraft_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(SledBuilder).await
}
