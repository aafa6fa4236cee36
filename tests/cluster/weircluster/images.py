"""Container images made offline: OCI archives written from directories, imported into containerd.

There is no registry here. An OCI image archive is a tar of an OCI layout (oci-layout, index.json,
blobs/sha256/...); the index's `io.containerd.image.name` annotation names the image, and
`ctr images import` keeps that name, so pods find it with imagePullPolicy IfNotPresent.

- agnhost (the name upstream's e2e framework asks for) and the sandbox image (agnhost's `pause`)
  share one layer: the static agnhost binary and busybox for the few specs that run a shell.
- Weir's image is what install/Containerfile's last stage makes (Debian bookworm with iptables and
  mount, weir-agent, and the plugin under /opt/weir/bin), built from Debian's packages with
  debootstrap instead of a base image pulled from a registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from . import config
from .run import Failed, log, out, run

LAYER_MEDIA = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA = "application/vnd.oci.image.manifest.v1+json"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What install/Containerfile adds to debian:bookworm-slim.
WEIR_BASE_PACKAGES = ["iptables", "mount", "conntrack"]


def _tar_dir(root: Path, dest: Path) -> None:
    """A layer tar of root's contents, owned by root, reproducible (sorted, mtime 0)."""

    def reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False, filter=reset)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_image(dest: Path, name: str, layers: list[Path], entrypoint: list[str], env: list[str] | None = None,
                cmd: list[str] | None = None) -> None:
    """An OCI archive at dest holding one linux/amd64 image named `name` with these layer tars."""
    diff_ids = [f"sha256:{_sha256(layer)}" for layer in layers]
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            **({"Cmd": cmd} if cmd else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    blobs: list[tuple[str, bytes | Path]] = []

    def blob(data: bytes | Path) -> tuple[str, int]:
        if isinstance(data, Path):
            digest, size = _sha256(data), data.stat().st_size
        else:
            digest, size = hashlib.sha256(data).hexdigest(), len(data)
        blobs.append((digest, data))
        return f"sha256:{digest}", size

    config_digest, config_size = blob(json.dumps(image_config, sort_keys=True).encode())
    layer_descs = []
    for layer in layers:
        digest, size = blob(layer)
        layer_descs.append({"mediaType": LAYER_MEDIA, "digest": digest, "size": size})
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA,
        "config": {"mediaType": CONFIG_MEDIA, "digest": config_digest, "size": config_size},
        "layers": layer_descs,
    }
    manifest_digest, manifest_size = blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MANIFEST_MEDIA,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                },
            }
        ],
    }
    tmp = dest.with_suffix(".partial")
    with tarfile.open(tmp, "w") as tar:

        def add_bytes(arcname: str, data: bytes) -> None:
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add_bytes("index.json", json.dumps(index).encode())
        seen = set()
        for digest, data in blobs:
            if digest in seen:
                continue
            seen.add(digest)
            if isinstance(data, Path):
                tar.add(data, arcname=f"blobs/sha256/{digest}")
            else:
                add_bytes(f"blobs/sha256/{digest}", data)
    tmp.rename(dest)


def _agnhost_layer() -> Path:
    layer = config.IMAGES / "agnhost-layer.tar"
    src = config.BIN / "agnhost"
    if layer.exists() and layer.stat().st_mtime >= src.stat().st_mtime:
        return layer
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise Failed("/bin/busybox is missing (Debian's busybox-static, installed by scripts/setup.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy2(src, root / "agnhost")
        (root / "bin").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        # Every applet, as busybox-based images have them (a few e2e specs run shell commands).
        for applet in out([busybox, "--list"]).split():
            if not (root / "bin" / applet).exists():
                (root / "bin" / applet).symlink_to("busybox")
        for d in ("tmp", "etc", "proc", "sys", "dev"):
            (root / d).mkdir(exist_ok=True)
        (root / "tmp").chmod(0o1777)
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        _tar_dir(root, layer)
    return layer


def _weir_base_layer() -> Path:
    """Debian bookworm minbase with install/Containerfile's packages, as one layer (cached)."""
    layer = config.IMAGES / "weir-base-layer.tar"
    stamp = layer.with_suffix(".recipe")
    recipe = json.dumps(["bookworm", "minbase", WEIR_BASE_PACKAGES])
    if layer.exists() and stamp.exists() and stamp.read_text() == recipe:
        return layer
    if not shutil.which("debootstrap"):
        raise Failed("debootstrap is missing (installed by scripts/cluster.sh's setup)")
    log("making Weir's base image from Debian packages (debootstrap bookworm minbase + iptables, mount)")
    root = config.IMAGES / "weir-base-rootfs"
    shutil.rmtree(root, ignore_errors=True)
    run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(WEIR_BASE_PACKAGES)}", "bookworm", root, DEBIAN_MIRROR],
        quiet=True,
        timeout=1800,
    )
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        p = root / junk
        if p.exists():
            shutil.rmtree(p)
            p.mkdir()
    _tar_dir(root, layer)
    shutil.rmtree(root)
    stamp.write_text(recipe)
    return layer


def _weir_layer(release: Path) -> Path:
    layer = config.IMAGES / "weir-layer.tar"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "usr/local/bin").mkdir(parents=True)
        (root / "opt/weir/bin").mkdir(parents=True)
        shutil.copy2(release / "weir-agent", root / "usr/local/bin/weir-agent")
        shutil.copy2(release / "weir", root / "opt/weir/bin/weir")
        _tar_dir(root, layer)
    return layer


def build_all(weir_release: Path) -> None:
    config.IMAGES.mkdir(parents=True, exist_ok=True)
    agnhost = _agnhost_layer()
    # As upstream's image: with no arguments agnhost pauses (a container given only the image, as
    # network-policy-api's conformance clients are, stays up).
    write_image(config.IMAGES / "agnhost.tar", config.AGNHOST_IMAGE, [agnhost], ["/agnhost"], cmd=["pause"])
    write_image(config.IMAGES / "pause.tar", config.PAUSE_IMAGE, [agnhost], ["/agnhost", "pause"])
    write_image(
        config.IMAGES / "weir.tar",
        config.WEIR_IMAGE,
        [_weir_base_layer(), _weir_layer(weir_release)],
        ["/usr/local/bin/weir-agent"],
    )


def archives() -> list[Path]:
    return [config.IMAGES / n for n in ("pause.tar", "agnhost.tar", "weir.tar")]
