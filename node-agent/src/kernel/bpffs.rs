//! The bpf filesystem the pins live on.

use std::{fs, path::Path};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

/// The kernel's magic number for bpffs (`BPF_FS_MAGIC`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where bpffs is conventionally mounted; the agent mounts it there when nothing is (as Cilium does),
/// because pins on any other filesystem are impossible and pins are what make restarts safe.
const BPFFS_MOUNT: &str = "/sys/fs/bpf";

fn is_bpffs(dir: &Path) -> Result<bool> {
    let stat =
        nix::sys::statfs::statfs(dir).with_context(|| format!("statfs {}", dir.display()))?;
    Ok(stat.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

/// Make `dir` exist on a bpf filesystem, mounting one at `/sys/fs/bpf` when `dir` is below it
/// and nothing is mounted there.
pub fn ensure(dir: &Path) -> Result<()> {
    let mount_point = Path::new(BPFFS_MOUNT);
    if dir.starts_with(mount_point) && mount_point.is_dir() && !is_bpffs(mount_point)? {
        nix::mount::mount(
            Some("bpf"),
            mount_point,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            Some("mode=0700"),
        )
        .with_context(|| format!("mounting bpffs at {BPFFS_MOUNT}"))?;
        info!("mounted bpffs at {BPFFS_MOUNT}");
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !is_bpffs(dir)? {
        bail!(
            "{} is not on a bpf filesystem; mount one (mount -t bpf bpf /sys/fs/bpf) so pinned maps \
             and programs survive agent restarts",
            dir.display()
        );
    }
    Ok(())
}

/// Pins of an older map layout (`v<N>` below the current ABI version) belong to programs this agent
/// has just replaced on every interface; removing them detaches the old programs and frees their maps.
pub fn remove_old_abi_pins(bpffs_dir: &Path) {
    let Ok(entries) = fs::read_dir(bpffs_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = name
            .strip_prefix('v')
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|v| v < weir_common::maps::ABI_VERSION);
        if old {
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    info!(dir = %entry.path().display(), "removed pins of an older datapath ABI")
                }
                Err(e) => warn!(%e, dir = %entry.path().display(), "removing old pins"),
            }
        }
    }
}
