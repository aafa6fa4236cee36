// SPDX-License-Identifier: Apache-2.0
//! Weir under a real, independent CNI client: Debian's podman 4.3 with its CNI backend runs two
//! containers in a lab node; they ping and talk HTTP over Weir, and removing them leaves no veth, IP
//! reservation or pinned link. podman runs inside the node netns (entered with setns only, so
//! bpffs stays visible) with a private containers.conf and storage under a temp dir.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use weir_tests::{bin_path, netns::command_in_netns, Lab, LabOptions};

struct Podman {
    netns: String,
    dir: PathBuf,
}

impl Podman {
    fn new(lab: &Lab, dir: &Path) -> Self {
        let node = lab.node(1).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let plugin_dir = bin_path("weir").parent().unwrap().to_owned();
        // Seen working here: runc, cgroupfs, file events and low ulimits; podman reads only
        // *.conflist files and calls VERSION on every command.
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=512:512\"]\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n\
                 network_config_dir = \"{}\"\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\nevents_logfile_path = \"{}\"\n",
                plugin_dir.display(),
                node.cni_conf_dir.display(),
                dir.join("events.log").display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                dir.join("graph").display(),
                dir.join("run").display()
            ),
        )
        .unwrap();
        Self {
            netns: node.netns,
            dir: dir.to_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg("120")
            .arg("podman")
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"));
        command_in_netns(&mut cmd, &self.netns).unwrap();
        cmd.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// An image made from Debian's busybox-static, imported (no registry needed).
    fn import_busybox(&self) {
        let rootfs = self.dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "ping", "wget", "httpd", "mkdir", "echo", "sleep"] {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        let tar = self.dir.join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        self.ok(&["import", tar.to_str().unwrap(), "weir-busybox"]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        // Storage holds read-only layers; `podman system reset` is the supported way to drop it.
        let _ = self.run(&["system", "reset", "-f"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn podman_available() -> bool {
    let found = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("WEIR_REQUIRE_PODMAN").is_some() {
        panic!("WEIR_REQUIRE_PODMAN is set but podman is not installed (run scripts/setup.sh)");
    }
    found
}

#[test]
fn podman_containers_talk_over_weir_and_leave_nothing_when_removed() {
    require_root!();
    if !podman_available() {
        eprintln!("SKIPPED: podman is not installed");
        return;
    }
    let lab = Lab::up(&LabOptions::isolated("podman")).unwrap();
    let podman = Podman::new(&lab, &lab.dir().join("podman"));
    podman.import_busybox();

    podman.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "weir",
        "weir-busybox",
        "/bin/sh",
        "-c",
        "mkdir -p /w && echo hello-from-web > /w/index.html && exec httpd -f -p 8080 -h /w",
    ]);
    let ip = podman.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.weir.IPAddress}}",
        "web",
    ]);
    assert!(ip.starts_with("10.244.1."), "{ip}");
    let script = format!("ping -c1 -W2 {ip} && wget -q -O- http://{ip}:8080/");
    let out = podman.ok(&[
        "run",
        "--rm",
        "--network",
        "weir",
        "--cap-add",
        "NET_RAW",
        "weir-busybox",
        "/bin/sh",
        "-c",
        &script,
    ]);
    assert!(out.contains("1 packets received"), "{out}");
    assert!(out.ends_with("hello-from-web"), "{out}");

    podman.ok(&["rm", "-f", "-t", "0", "web"]);
    let node = lab.node(1).unwrap();
    let links = weir_tests::ip_in(&node.netns, &["-o", "link", "show"]).unwrap();
    let veths: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .filter(|n| n.len() >= 15 && n.starts_with("weir"))
        .collect();
    assert!(veths.is_empty(), "veths left: {veths:?}");
    let ipam: serde_json::Value = serde_json::from_slice(
        &std::fs::read(node.state_dir.join("ipam/weir/allocations.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        ipam["allocations"],
        serde_json::json!([]),
        "IPs left reserved"
    );
    // Pins live under v<ABI version>: the one directory named v<N>.
    let pin_dir = std::fs::read_dir(&node.bpffs_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('v'))
        })
        .expect("a pin directory");
    let pins: Vec<String> = std::fs::read_dir(pin_dir.join("links"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The node's own attachments (weir0, the uplink or the tunnel) stay with the agent.
        .filter(|n| n.starts_with("from-pod:"))
        .collect();
    assert!(pins.is_empty(), "pinned links left: {pins:?}");
}
