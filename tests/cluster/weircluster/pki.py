"""The cluster's PKI and kubeconfigs, as kubeadm lays them out, made with openssl.

One CA signs everything: the API server's serving certificate, its client certificate for the
kubelets, and one client certificate per component whose subject is what the API server's Node
authorizer and default RBAC bindings expect (system:node:<name> in system:nodes for each kubelet,
system:kube-proxy, system:kube-controller-manager, system:kube-scheduler, and an admin in
system:masters). Service-account tokens are signed with their own key pair.
"""

from __future__ import annotations

from pathlib import Path

from . import config
from .run import run

PKI_DAYS = "30"


def _key(path: Path) -> None:
    run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", path], quiet=True)
    path.chmod(0o600)


def _ca(pki: Path) -> None:
    _key(pki / "ca.key")
    run(
        [
            "openssl", "req", "-x509", "-new", "-key", pki / "ca.key", "-days", PKI_DAYS,
            "-subj", "/CN=weir-cluster-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-out", pki / "ca.crt",
        ],
        quiet=True,
    )


def _cert(pki: Path, name: str, subject: str, *, server_sans: list[str] | None = None) -> None:
    """name.crt/name.key signed by the CA: a client certificate, or a serving one with SANs."""
    key, csr, crt = pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.crt"
    _key(key)
    usage = "serverAuth" if server_sans else "clientAuth"
    argv = [
        "openssl", "req", "-new", "-key", key, "-subj", subject,
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext", f"extendedKeyUsage={usage}",
    ]
    if server_sans:
        argv += ["-addext", "subjectAltName=" + ",".join(server_sans)]
    run([*argv, "-out", csr], quiet=True)
    run(
        [
            "openssl", "x509", "-req", "-in", csr, "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key",
            "-CAcreateserial", "-days", PKI_DAYS, "-copy_extensions", "copyall", "-out", crt,
        ],
        quiet=True,
    )
    csr.unlink()


def kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> None:
    """A kubeconfig for `server` with a client certificate; paths as its reader sees them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: weir-cluster
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: weir-cluster
  context: {{cluster: weir-cluster, user: {user}}}
current-context: weir-cluster
"""
    )
    path.chmod(0o600)


def make(pki: Path, nodes: list[config.Node]) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    _ca(pki)
    control = nodes[0]
    _cert(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        server_sans=[
            "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local", "DNS:localhost",
            f"IP:{config.KUBERNETES_SERVICE_IP}", f"IP:{control.ip}", "IP:127.0.0.1",
        ],
    )
    _cert(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
    _cert(pki, "admin", "/O=system:masters/CN=kubernetes-admin")
    _cert(pki, "controller-manager", "/CN=system:kube-controller-manager")
    _cert(pki, "scheduler", "/CN=system:kube-scheduler")
    _cert(pki, "kube-proxy", "/CN=system:kube-proxy")
    for node in nodes:
        _cert(pki, f"kubelet-{node.name}", f"/O=system:nodes/CN=system:node:{node.name}")
    run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pki / "sa.key"], quiet=True)
    run(["openssl", "pkey", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub"], quiet=True)
    (pki / "sa.key").chmod(0o600)
