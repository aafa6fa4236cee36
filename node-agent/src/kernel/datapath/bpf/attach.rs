//! Attaching the tc programs: pinned tcx links, or clsact filters with a marker file each (see
//! [`AttachMode`]), and finding and removing either without a loaded object (for cleanup).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
        Link as _, LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    },
    sys::SyscallError,
    Ebpf,
};
use tracing::{debug, info};
use weir_common::maps::{PROG_FROM_HOST, PROG_FROM_POD, PROG_FROM_TUNNEL, PROG_FROM_UPLINK};

use super::{fs_err, BpfDatapath};
use crate::kernel::datapath::{AttachMode, Attachments, DatapathError, Hook};

/// The clsact filter slot of every hook: a fixed priority and handle, so a restarted agent finds
/// and replaces its own filter instead of adding a second one. Priority 1 runs before filters
/// other software adds at the kernel's default priorities.
const FILTER_PRIORITY: u16 = 1;
const FILTER_HANDLE: TcHandle = TcHandle::new(0, 1);

/// The file name of an attachment: `<hook>:<ifname>`, with dots (which bpffs rejects in names)
/// as `%`.
fn attachment_file(ifname: &str, hook: Hook) -> String {
    format!("{}:{}", hook.pin_suffix(), ifname.replace('.', "%"))
}

/// Attachments named by the files of `dir` (missing is empty).
fn list_attachments(dir: &Path) -> Result<Vec<(String, Hook)>, DatapathError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fs_err(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let file = entry.map_err(fs_err(dir))?.file_name();
        let file = file.to_string_lossy();
        let Some((suffix, ifname)) = file.split_once(':') else {
            continue;
        };
        if let Some(hook) = Hook::ALL.into_iter().find(|h| h.pin_suffix() == suffix) {
            out.push((ifname.replace('%', "."), hook));
        }
    }
    Ok(out)
}

/// Every interface that has an attachment of either mode, without loading anything (for
/// `weir-agent cleanup`).
pub fn attached_interfaces(attachments: &Attachments) -> Result<Vec<String>, DatapathError> {
    let mut names: Vec<String> = list_attachments(&attachments.link_pin_dir)?
        .into_iter()
        .chain(list_attachments(&attachments.filter_dir)?)
        .map(|(ifname, _)| ifname)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Remove Weir's clsact filter of `hook` on `ifname` if a marker says there is one (also for
/// `weir-agent cleanup`, which loads nothing).
pub fn detach_clsact(
    attachments: &Attachments,
    ifname: &str,
    hook: Hook,
) -> Result<(), DatapathError> {
    let marker = attachments.filter_dir.join(attachment_file(ifname, hook));
    if !marker.exists() {
        return Ok(());
    }
    let (_, attach_type) = hook_program(hook);
    match SchedClassifierLink::attached(ifname, attach_type, FILTER_PRIORITY, FILTER_HANDLE, None) {
        Ok(link) => match link.detach() {
            Ok(()) => {}
            // Gone already: with the interface, or never made (a crash after the marker).
            Err(e)
                if matches!(
                    os_error(&e),
                    Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)
                ) => {}
            Err(e) => {
                return Err(DatapathError::Filter {
                    what: attachment_file(ifname, hook),
                    message: format!("removing: {e}"),
                })
            }
        },
        // No such interface: its filters went with it.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
        Err(e) => {
            return Err(DatapathError::Filter {
                what: attachment_file(ifname, hook),
                message: e.to_string(),
            })
        }
    }
    remove_if_present(&marker)?;
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<bool, DatapathError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(fs_err(path)(e)),
    }
}

/// The errno behind an aya program error, where there is one.
fn os_error(err: &ProgramError) -> Option<i32> {
    match err {
        ProgramError::SyscallError(SyscallError { io_error, .. })
        | ProgramError::IOError(io_error)
        | ProgramError::TcError(TcError::IoError(io_error)) => io_error.raw_os_error(),
        ProgramError::TcError(TcError::NetlinkError(e)) | ProgramError::NetlinkError(e) => {
            e.raw_os_error()
        }
        _ => None,
    }
}

/// What a kernel without tcx (before 6.6) answers to a tcx link: an unknown attach type.
/// `ENOTSUPP` (524) is the kernel-internal code some paths leak.
fn is_tcx_unsupported(err: &ProgramError) -> bool {
    matches!(os_error(err), Some(libc::EINVAL | libc::EOPNOTSUPP | 524))
}

impl BpfDatapath {
    fn link_pin(&self, ifname: &str, hook: Hook) -> PathBuf {
        self.attachments
            .link_pin_dir
            .join(attachment_file(ifname, hook))
    }

    fn filter_marker(&self, ifname: &str, hook: Hook) -> PathBuf {
        self.attachments
            .filter_dir
            .join(attachment_file(ifname, hook))
    }

    fn attach_tcx(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        let pin = self.link_pin(ifname, hook);
        let link_err = |message: String| DatapathError::Link {
            path: pin.display().to_string(),
            message,
        };
        let (name, attach_type) = hook_program(hook);
        let prog = program(&mut self.ebpf, name)?;
        let prog_err = |source| DatapathError::Program { name, source };
        let existing = if pin.exists() {
            Some(
                PinnedLink::from_pin(&pin)
                    .map_err(|e| link_err(format!("{e}: {:?}", std::error::Error::source(&e))))?,
            )
        } else {
            None
        };
        match existing {
            Some(existing) => {
                // Swap the program behind the pinned link in one syscall (bpf_link_update).
                let link = SchedClassifierLink::try_from(FdLink::from(existing))
                    .map_err(|e| link_err(format!("not a tcx link: {e}")))?;
                let id = prog.attach_to_link(link).map_err(prog_err)?;
                // Dropping our handle closes the fd; the pin keeps the link attached.
                drop(prog.take_link(id).map_err(prog_err)?);
                debug!(ifname, ?hook, "replaced program on pinned link");
            }
            None => {
                let id = prog
                    .attach_with_options(
                        ifname,
                        attach_type,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(prog_err)?;
                let link: FdLink = prog
                    .take_link(id)
                    .map_err(prog_err)?
                    .try_into()
                    .map_err(|e| link_err(format!("not an fd link: {e}")))?;
                link.pin(&pin).map_err(|e| link_err(e.to_string()))?;
                debug!(ifname, ?hook, "attached and pinned");
            }
        }
        // A clsact filter of an earlier agent: tcx runs first, so it has judged nothing since
        // the link went in.
        detach_clsact(&self.attachments, ifname, hook)
    }

    fn attach_clsact(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        let filter_err = |message: String| DatapathError::Filter {
            what: attachment_file(ifname, hook),
            message,
        };
        // The marker first: a crash between the two leaves a marker without a filter, which
        // detach handles, never a filter nobody knows of.
        let marker = self.filter_marker(ifname, hook);
        let existed = marker.exists();
        if !existed {
            fs::write(&marker, b"").map_err(fs_err(&marker))?;
        }
        match tc::qdisc_add_clsact(ifname) {
            Ok(()) => {}
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(filter_err(format!("adding the clsact qdisc: {e}"))),
        }
        let (name, attach_type) = hook_program(hook);
        let prog = program(&mut self.ebpf, name)?;
        let prog_err = |source| DatapathError::Program { name, source };
        // Our filter already there (an earlier agent's): change its program in place, which
        // cls_bpf does atomically. Otherwise create it, exclusively at our slot. The marker says
        // which to try first, so a new interface costs one request per hook.
        let ours = || {
            SchedClassifierLink::attached(ifname, attach_type, FILTER_PRIORITY, FILTER_HANDLE, None)
                .map_err(|e| filter_err(e.to_string()))
        };
        let options = || {
            TcAttachOptions::Netlink(NlOptions {
                priority: FILTER_PRIORITY,
                handle: FILTER_HANDLE,
                classid: None,
            })
        };
        let id = if existed {
            match prog.attach_to_link(ours()?) {
                Err(e) if os_error(&e) == Some(libc::ENOENT) => {
                    prog.attach_with_options(ifname, attach_type, options())
                }
                other => other,
            }
        } else {
            match prog.attach_with_options(ifname, attach_type, options()) {
                Err(e) if os_error(&e) == Some(libc::EEXIST) => prog.attach_to_link(ours()?),
                other => other,
            }
        }
        .map_err(prog_err)?;
        debug!(ifname, ?hook, replaced = existed, "clsact filter in place");
        // The filter must outlive this handle (dropping it would delete the filter): it stays
        // until detach or until the interface goes.
        std::mem::forget(prog.take_link(id).map_err(prog_err)?);
        // A pinned tcx link of an earlier agent: it ran first until now; without it, the filter
        // judges.
        remove_if_present(&self.link_pin(ifname, hook))?;
        Ok(())
    }

    /// Attach `hook`'s program to `ifname` (see [`super::Datapath::attach`]).
    pub(super) fn attach_hook(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        if self.attachments.mode == AttachMode::Auto && hook == Hook::FromPod {
            return self.attach_clsact(ifname, hook);
        }
        match self.resolved {
            Some(AttachMode::Clsact) => self.attach_clsact(ifname, hook),
            Some(_) => self.attach_tcx(ifname, hook),
            // Auto, first attach: it is the probe.
            None => match self.attach_tcx(ifname, hook) {
                Ok(()) => {
                    info!(mode = %AttachMode::Tcx, "tc attach mode (probed: the kernel has tcx)");
                    self.resolved = Some(AttachMode::Tcx);
                    Ok(())
                }
                Err(DatapathError::Program { source, .. }) if is_tcx_unsupported(&source) => {
                    info!(mode = %AttachMode::Clsact, error = %source, "tc attach mode (probed: no tcx in this kernel)");
                    self.resolved = Some(AttachMode::Clsact);
                    self.attach_clsact(ifname, hook)
                }
                Err(e) => Err(e),
            },
        }
    }

    pub(super) fn detach_hook(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        remove_if_present(&self.link_pin(ifname, hook))?;
        detach_clsact(&self.attachments, ifname, hook)
    }

    pub(super) fn attachments_made(&self) -> Result<Vec<(String, Hook)>, DatapathError> {
        let mut out = list_attachments(&self.attachments.link_pin_dir)?;
        for found in list_attachments(&self.attachments.filter_dir)? {
            if !out.contains(&found) {
                out.push(found);
            }
        }
        Ok(out)
    }
}

pub(super) fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    let prog = ebpf.program_mut(name).ok_or(DatapathError::Program {
        name,
        source: aya::programs::ProgramError::UnexpectedProgramType,
    })?;
    prog.try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

fn hook_program(hook: Hook) -> (&'static str, TcAttachType) {
    match hook {
        Hook::FromPod => (PROG_FROM_POD, TcAttachType::Ingress),
        Hook::FromHost => (PROG_FROM_HOST, TcAttachType::Egress),
        Hook::FromTunnel => (PROG_FROM_TUNNEL, TcAttachType::Ingress),
        Hook::FromUplink => (PROG_FROM_UPLINK, TcAttachType::Ingress),
    }
}
