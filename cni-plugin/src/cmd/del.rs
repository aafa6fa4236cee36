// SPDX-License-Identifier: Apache-2.0
//! DEL: remove everything ADD created, and succeed when it is already gone.
//!
//! DEL must work when the netns is gone, when `CNI_NETNS` or `prevResult` is missing, and when it
//! runs twice, so it needs none of them: the host veth name is derived from the attachment, the
//! address is found in the IPAM state, and the agent is told by attachment. Every step runs even if
//! an earlier one failed; DEL fails only if something that exists could not be removed.
//!
//! 1. Tell weir-agent (`Request::Del`). If it cannot be reached, write the attachment to the DEL
//!    spool (`<dataDir>/../del-queue/<sha256(containerid/ifname)>.json`), which the agent replays
//!    at start-up, and carry on.
//! 2. Delete the host veth (its peer in the pod goes with it).
//! 3. Release the address.

use std::{
    fs::{self, DirBuilder, OpenOptions},
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use weir_agent_api::{AttachmentId, Request, Response};
use weir_netlink::blocking::Runtime;

use crate::{
    agent::{describe, timeouts, Agent},
    attachment_digest,
    config::NetConf,
    error::CniError,
    host_veth_name,
    ipam::Ipam,
    skel::DelArgs,
};

pub fn run(conf: &NetConf, args: &DelArgs) -> Result<(), CniError> {
    let id = &args.attachment;
    let mut errors = Vec::new();

    let agent = Agent::new(&conf.agent_socket);
    match tell_agent(&agent, &conf.del_queue_dir(), id) {
        Ok(Delivery::Delivered) => tracing::debug!("weir-agent removed the endpoint"),
        Ok(Delivery::Spooled(path)) => {
            tracing::warn!(spool = %path.display(), "weir-agent unreachable; DEL spooled");
        }
        Err(e) => errors.push(e),
    }

    let host_name = host_veth_name(&id.container_id, &id.ifname);
    let deleted = Runtime::new().and_then(|rt| {
        rt.connect()
            .and_then(|host| host.run(|nl| nl.del_link(&host_name)))
    });
    match deleted {
        Ok(true) => tracing::debug!(host = host_name, "deleted the veth pair"),
        Ok(false) => tracing::debug!(host = host_name, "veth pair already gone"),
        Err(e) => errors.push(e.into()),
    }

    let ipam = Ipam::new(&conf.data_dir, &conf.name, conf.pod_cidr, conf.gateway);
    match ipam.release(id) {
        Ok(Some(ip)) => tracing::debug!(%ip, "released the address"),
        Ok(None) => tracing::debug!("no address was reserved"),
        Err(e) => errors.push(e.into()),
    }

    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(CniError::Multiple(errors)),
    }
}

/// What became of a DEL meant for the agent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    Delivered,
    /// The agent could not be reached; it will find the DEL here at start-up.
    Spooled(PathBuf),
}

/// Tell the agent to forget `id`, or spool the request if it cannot be reached.
pub(crate) fn tell_agent(
    agent: &Agent,
    spool_dir: &Path,
    id: &AttachmentId,
) -> Result<Delivery, CniError> {
    let request = Request::Del {
        attachment: id.clone(),
    };
    match agent.call(&request, timeouts::DEL) {
        Ok(Response::Ok) => Ok(Delivery::Delivered),
        Ok(Response::Error { message }) => Err(CniError::AgentRejected { op: "DEL", message }),
        Ok(other) => Err(CniError::AgentProtocol {
            op: "DEL",
            answer: describe(&other),
        }),
        Err(e) => {
            tracing::debug!(error = %e, "weir-agent did not take the DEL");
            spool(spool_dir, id).map(Delivery::Spooled)
        }
    }
}

/// Write `id` as JSON to `<dir>/<attachment digest>.json`, atomically (the agent only reads
/// `*.json` files, and a file appears there complete or not at all).
pub fn spool(dir: &Path, id: &AttachmentId) -> Result<PathBuf, CniError> {
    let digest = attachment_digest(&id.container_id, &id.ifname);
    let path = dir.join(format!("{digest}.json"));
    let tmp = dir.join(format!(".{digest}.json.tmp"));
    let what = |verb: &str| format!("{verb} the DEL spool file {}", path.display());

    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CniError::io(format!("creating the DEL spool {}", dir.display()), e))?;
    let body = serde_json::to_vec(id).map_err(|e| CniError::io(what("encoding"), e.into()))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| CniError::io(what("creating"), e))?;
    file.write_all(&body)
        .and_then(|()| file.sync_all())
        .map_err(|e| CniError::io(what("writing"), e))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| CniError::io(what("renaming"), e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn id() -> AttachmentId {
        AttachmentId {
            container_id: "c0ffee".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn an_unreachable_agent_gets_the_del_spooled() {
        let dir = TempDir::new().unwrap();
        let agent = Agent::new(&dir.path().join("no-agent.sock"));
        let spool_dir = dir.path().join("del-queue");
        let delivery = tell_agent(&agent, &spool_dir, &id()).unwrap();
        let expected = spool_dir.join(format!("{}.json", attachment_digest("c0ffee", "eth0")));
        assert_eq!(delivery, Delivery::Spooled(expected.clone()));
        let back: AttachmentId = serde_json::from_slice(&fs::read(&expected).unwrap()).unwrap();
        assert_eq!(back, id());
        assert_eq!(
            fs::read_to_string(&expected).unwrap(),
            r#"{"container_id":"c0ffee","ifname":"eth0"}"#
        );
        // Spooling twice is harmless and leaves one file.
        tell_agent(&agent, &spool_dir, &id()).unwrap();
        assert_eq!(fs::read_dir(&spool_dir).unwrap().count(), 1);
    }
}
