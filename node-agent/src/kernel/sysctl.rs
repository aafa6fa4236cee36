//! Sysctls the datapath relies on (forwarding, reverse-path filtering, IPv6 off on Weir's devices).

use std::path::Path;

use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
#[error("sysctl {path}: {source}")]
pub struct SysctlError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// The sysctl tree the agent writes: `/proc/sys`, or the host's mounted elsewhere when the agent's
/// own is read-only (as a container runtime mounts it in unprivileged containers; see
/// `--proc-sys-dir`). Whichever procfs mount they are reached through, `net/` sysctls are those of
/// the calling process's network namespace: with `hostNetwork`, the node's.
#[derive(Clone, Copy, Debug)]
pub struct Sysctls<'a> {
    root: &'a Path,
}

impl<'a> Sysctls<'a> {
    pub fn new(root: &'a Path) -> Self {
        Self { root }
    }

    /// Write a sysctl, given by its path below the root (`net/ipv4/ip_forward`).
    pub fn write(&self, path: &str, value: &str) -> Result<(), SysctlError> {
        let full = self.root.join(path);
        std::fs::write(&full, value).map_err(|source| SysctlError {
            path: full.display().to_string(),
            source,
        })
    }

    pub fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(path))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Node-wide sysctls the datapath relies on.
    pub fn configure_node(&self, host_dev: &str) -> Result<(), SysctlError> {
        self.write("net/ipv4/ip_forward", "1")?;
        // Pod packets reach the host stack on their veth, while the route back to them is via
        // weir0: strict reverse-path filtering would drop them. The eBPF programs do the
        // anti-spoofing instead.
        if self.read("net/ipv4/conf/all/rp_filter").as_deref() == Some("1") {
            warn!("net.ipv4.conf.all.rp_filter is strict (1); setting it to loose (2) so pod traffic is not dropped");
            self.write("net/ipv4/conf/all/rp_filter", "2")?;
        }
        self.write(&format!("net/ipv4/conf/{host_dev}/rp_filter"), "0")?;
        Ok(())
    }

    /// Sysctls of the VXLAN device: decapsulated packets come from other nodes' pods, whose route
    /// points at `weir0`, so strict reverse-path filtering would drop them.
    pub fn configure_tunnel(&self, ifname: &str) -> Result<(), SysctlError> {
        self.write(&format!("net/ipv4/conf/{ifname}/rp_filter"), "0")?;
        if let Err(e) = self.write(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "1") {
            debug!(%e, "IPv6 sysctl not available");
        }
        Ok(())
    }

    /// Sysctls of one host-side veth.
    pub fn configure_veth(&self, ifname: &str) -> Result<(), SysctlError> {
        self.write(&format!("net/ipv4/conf/{ifname}/rp_filter"), "0")?;
        // IPv4-only datapath: keep the host side from emitting router solicitations into the pod.
        if let Err(e) = self.write(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "1") {
            debug!(%e, "IPv6 sysctl not available");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_are_read_and_written_under_the_given_root() {
        let root = tempfile::tempdir().unwrap();
        let dir = |d: &str| std::fs::create_dir_all(root.path().join(d)).unwrap();
        let put = |f: &str, v: &str| std::fs::write(root.path().join(f), v).unwrap();
        let get = |f: &str| std::fs::read_to_string(root.path().join(f)).unwrap();
        for d in [
            "net/ipv4/conf/all",
            "net/ipv4/conf/weir0",
            "net/ipv4/conf/veth1",
        ] {
            dir(d);
        }
        put("net/ipv4/ip_forward", "0\n");
        put("net/ipv4/conf/all/rp_filter", "1\n");
        put("net/ipv4/conf/weir0/rp_filter", "1\n");
        put("net/ipv4/conf/veth1/rp_filter", "1\n");
        let sysctls = Sysctls::new(root.path());

        assert_eq!(
            sysctls.read("net/ipv4/conf/all/rp_filter").as_deref(),
            Some("1")
        );
        assert_eq!(sysctls.read("net/ipv4/no_such_sysctl"), None);
        sysctls.configure_node("weir0").unwrap();
        assert_eq!(get("net/ipv4/ip_forward"), "1");
        assert_eq!(get("net/ipv4/conf/all/rp_filter"), "2");
        assert_eq!(get("net/ipv4/conf/weir0/rp_filter"), "0");
        // No IPv6 tree under this root: the IPv6 sysctl is skipped, the IPv4 one is written.
        sysctls.configure_veth("veth1").unwrap();
        assert_eq!(get("net/ipv4/conf/veth1/rp_filter"), "0");

        // A missing interface is an error that names the path under the root.
        let error = sysctls.configure_veth("gone0").unwrap_err().to_string();
        let expected = root.path().join("net/ipv4/conf/gone0/rp_filter");
        assert!(error.contains(&expected.display().to_string()), "{error}");
    }
}
