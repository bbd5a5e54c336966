// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The QEMU process each VM's PASIDs are bound to, and what its exit
//! does: a VM in hold-over (or holding PASIDs with no connection) whose
//! bound process exits is released at once, since no device of that
//! QEMU can come back for them. The process is learnt and watched by
//! `qemu_watch` (peer credentials, pidfds); the registry only keeps the
//! binding, durably, and decides.

use log::info;

use super::record::{QemuPeer, Record};
use super::{ReclaimReason, Registry, VmId};

impl Registry {
    /// Binds VM `vm`'s PASIDs to the QEMU process of its new connection
    /// (`None`: the peer could not be named, e.g. a QEMU in another pid
    /// namespace; the VM is then bound to no process). Journaled when it
    /// changes.
    pub fn bind_qemu(&mut self, vm: VmId, peer: Option<QemuPeer>) {
        let Some(rec) = self.record_mut(vm) else {
            return;
        };
        rec.qemu_exited = false;
        if rec.qemu == peer {
            return;
        }
        rec.qemu = peer;
        self.log(&Record::Peer {
            owner: vm.0.as_u32(),
            peer,
        });
    }

    /// Unbinds VM `vm`'s PASIDs from its QEMU process: its exit no longer
    /// ends the VM's hold-over (`pasidctl detach --keep`, for a migration
    /// on this host where the source QEMU exits before the destination's
    /// device connects). Journaled; nothing happens if none was bound.
    pub fn unbind_qemu(&mut self, vm: VmId) {
        let name = self.vm_name(vm).to_string();
        let Some(rec) = self.record_mut(vm) else {
            return;
        };
        rec.qemu_exited = false;
        let Some(peer) = rec.qemu.take() else {
            return;
        };
        self.log(&Record::Peer {
            owner: vm.0.as_u32(),
            peer: None,
        });
        info!("vm={name} event=qemu-unbound pid={}", peer.pid);
    }

    /// The QEMU process VM `vm`'s PASIDs are bound to, if any.
    pub fn bound_qemu(&self, vm: VmId) -> Option<QemuPeer> {
        self.space
            .owner_name(vm.0)
            .and_then(|n| self.vms.get(n))
            .and_then(|r| r.qemu)
    }

    /// Every VM bound to a QEMU process, with it: what start-up checks.
    pub fn bound_qemus(&self) -> Vec<(String, VmId, QemuPeer)> {
        self.vms
            .iter()
            .filter_map(|(name, r)| Some((name.clone(), VmId(r.owner), r.qemu?)))
            .collect()
    }

    /// Process `pid`, bound to VM `vm`, has exited (its pidfd said so, or
    /// it was found gone at start-up; `at_start` says which, for the log).
    /// A connected VM only notes it: the end of the connection then
    /// releases at once. Otherwise the binding is dropped and everything
    /// the VM holds is released, hold-over or not. Nothing happens if the
    /// VM is bound to another process, or to none, by now. Returns the
    /// references released.
    pub fn qemu_exited(&mut self, vm: VmId, pid: u32, at_start: bool) -> u64 {
        let name = self.vm_name(vm).to_string();
        let held = self.space.usage(vm.0).map_or(0, |u| u.held);
        let Some(rec) = self.record_mut(vm) else {
            return 0;
        };
        if rec.qemu.map(|q| q.pid) != Some(pid) {
            return 0;
        }
        let when = if at_start { " at_start=true" } else { "" };
        if rec.connected {
            rec.qemu_exited = true;
            info!("vm={name} event=qemu-exited pid={pid} connected=true{when}");
            return 0;
        }
        let held_over = rec.held_over_until.is_some();
        rec.qemu = None;
        rec.qemu_exited = false;
        self.log(&Record::Peer {
            owner: vm.0.as_u32(),
            peer: None,
        });
        info!("vm={name} event=qemu-exited pid={pid} held={held} held_over={held_over}{when}");
        if held == 0 && !held_over {
            return 0;
        }
        self.reclaim_vm(vm, ReclaimReason::QemuExited)
    }

    /// Whether the process VM `vm` is bound to has exited while it was
    /// connected: the end of the connection then releases at once.
    pub(super) fn take_qemu_exited(&mut self, vm: VmId) -> bool {
        let name = self.vm_name(vm).to_string();
        let Some(rec) = self.record_mut(vm) else {
            return false;
        };
        if !rec.qemu_exited {
            return false;
        }
        rec.qemu_exited = false;
        let Some(peer) = rec.qemu.take() else {
            return false;
        };
        self.log(&Record::Peer {
            owner: vm.0.as_u32(),
            peer: None,
        });
        info!(
            "vm={name} event=qemu-exited pid={} disconnected=true",
            peer.pid
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use pasid_protocol::Request;

    use super::*;
    use crate::pasid_space::{OwnerLimits, PasidSpace, SpaceConfig};

    fn registry(holdover: Duration) -> (Registry, VmId) {
        let space = PasidSpace::new(SpaceConfig {
            pasid_bits: 8,
            reserved: vec![],
        })
        .unwrap();
        let mut reg = Registry::new(space, 1);
        let limits = OwnerLimits {
            quota: 10,
            range: 1..=255,
        };
        let vm = reg.add_vm("a", "a.sock", limits).unwrap();
        reg.set_holdover(vm, holdover);
        (reg, vm)
    }

    fn peer(pid: u32) -> Option<QemuPeer> {
        Some(QemuPeer {
            pid,
            boot_id: [7; 16],
        })
    }

    /// Connected, holding `n` PASIDs, bound to `pid`.
    fn connected(reg: &mut Registry, vm: VmId, pid: u32, n: usize) {
        reg.set_connected(vm, true);
        reg.bind_qemu(vm, peer(pid));
        for tag in 0..n {
            reg.handle(
                vm,
                Request::Alloc {
                    tag: tag as u64,
                    min: 1,
                    max: 255,
                },
            );
        }
    }

    fn held(reg: &Registry, vm: VmId) -> usize {
        reg.space().held_by(vm.0).len()
    }

    /// A hold-over bound to a process ends when that process exits; the
    /// exit of another process, or of one since unbound, ends nothing.
    #[test]
    fn exit_of_the_bound_process_ends_the_holdover() {
        let (mut reg, vm) = registry(Duration::from_secs(300));
        connected(&mut reg, vm, 100, 3);
        reg.set_connected(vm, false);
        reg.end_connection(vm, Instant::now());
        assert!(reg.vms()[0].held_over_for.is_some());
        assert_eq!(reg.qemu_exited(vm, 101, false), 0, "another process");
        assert_eq!(held(&reg, vm), 3);
        assert_eq!(reg.qemu_exited(vm, 100, false), 3);
        assert_eq!(held(&reg, vm), 0);
        assert_eq!(reg.vms()[0].held_over_for, None);
        assert_eq!(reg.vms()[0].qemu_pid, None);
        let t = &reg.vms.get("a").unwrap().tally;
        assert_eq!(t.reclaims(ReclaimReason::QemuExited), (1, 3));

        // Unbound (detach --keep): the exit releases nothing.
        let (mut reg, vm) = registry(Duration::from_secs(300));
        connected(&mut reg, vm, 100, 2);
        reg.unbind_qemu(vm);
        reg.set_connected(vm, false);
        reg.end_connection(vm, Instant::now());
        assert_eq!(reg.qemu_exited(vm, 100, false), 0);
        assert_eq!(held(&reg, vm), 2);
        assert!(reg.vms()[0].held_over_for.is_some());
    }

    /// The process exits while the VM is still connected (its socket
    /// closes first, the slot sees it a moment later): the end of the
    /// connection then releases instead of holding over.
    #[test]
    fn exit_seen_before_the_disconnect_releases_at_it() {
        let (mut reg, vm) = registry(Duration::from_secs(300));
        connected(&mut reg, vm, 100, 2);
        assert_eq!(reg.qemu_exited(vm, 100, false), 0);
        assert_eq!(held(&reg, vm), 2, "connected: kept until the end");
        reg.set_connected(vm, false);
        reg.end_connection(vm, Instant::now());
        assert_eq!(held(&reg, vm), 0);
        assert_eq!(reg.vms()[0].held_over_for, None);
        assert_eq!(reg.vms()[0].counters.holdovers, 0);
        // A new connection from another process starts afresh.
        connected(&mut reg, vm, 200, 1);
        reg.set_connected(vm, false);
        reg.end_connection(vm, Instant::now());
        assert_eq!(held(&reg, vm), 1);
    }

    /// With no hold-over running (a restart with hold-over 0 keeps the
    /// PASIDs of a VM whose QEMU lives), the exit still releases.
    #[test]
    fn exit_releases_without_a_holdover() {
        let (mut reg, vm) = registry(Duration::ZERO);
        connected(&mut reg, vm, 100, 2);
        // As after a restart: not connected, nothing held over.
        reg.set_connected(vm, false);
        assert_eq!(reg.qemu_exited(vm, 100, true), 2);
        assert_eq!(held(&reg, vm), 0);
    }
}
