//! What the core's tests share: a vfs over a real sled store and chunk
//! cache in a folder, with any remote.

use super::*;
use crate::remote::Remote;

/// Opens (or reopens) the core with its cache in `dir`, as device
/// `device` named `name`, talking to `remote`.
pub(crate) fn open_vfs(
    dir: &std::path::Path,
    device: DeviceId,
    name: &str,
    remote: Arc<dyn Remote>,
) -> Arc<Vfs> {
    let kv = kv::SledKv::open(&dir.join("meta")).unwrap();
    let chunks = ChunkCache::open(dir.join("chunks"), 1 << 30, 64 << 20, remote).unwrap();
    Vfs::open(
        VfsConfig {
            cache_dir: dir.to_path_buf(),
            device_id: device,
            device_name: name.into(),
            read_only: false,
            uid: 0,
            gid: 0,
            fsync_remote: false,
        },
        Arc::new(kv),
        chunks,
    )
    .unwrap()
}
