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
    /// VM `vm` has a new connection from `peer` (`None`: the peer could
    /// not be named, e.g. a QEMU in another pid namespace). A VM holding
    /// nothing, or connected again from the process it is bound to, is
    /// bound to it at once. A VM holding PASIDs bound to another process
    /// (or to none) keeps that binding until the new connection's driver
    /// sends a request ([`Registry::serve`]): only a device that started
    /// has claimed them. Journaled when the binding changes.
    pub fn bind_qemu(&mut self, vm: VmId, peer: Option<QemuPeer>) {
        let held = self.space.usage(vm.0).map_or(0, |u| u.held);
        let name = self.vm_name(vm).to_string();
        let Some(rec) = self.record_mut(vm) else {
            return;
        };
        rec.qemu_pending = None;
        if held > 0 && rec.qemu != peer {
            if let Some(p) = peer {
                rec.qemu_pending = Some(p);
                info!(
                    "vm={name} event=qemu-pending pid={} bound={}: bound when its driver speaks",
                    p.pid,
                    rec.qemu.map_or(0, |q| q.pid)
                );
            }
            return;
        }
        self.set_qemu(vm, peer);
    }

    /// Binds VM `vm` to `peer`, journaled if it changes.
    fn set_qemu(&mut self, vm: VmId, peer: Option<QemuPeer>) {
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

    /// The driver of VM `vm`'s connection has sent a request: `peer`, the
    /// connection's process whose binding waited for that, is bound now
    /// ([`Registry::serve`] takes it from the record).
    pub(super) fn driver_spoke(&mut self, vm: VmId, peer: QemuPeer) {
        info!("vm={} event=qemu-bound pid={}", self.vm_name(vm), peer.pid);
        self.set_qemu(vm, Some(peer));
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
        if rec.qemu_pending.is_some_and(|q| q.pid == pid) {
            // It never spoke: it claimed nothing.
            rec.qemu_pending = None;
            return 0;
        }
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
    /// connected: the end of the connection then releases at once. A
    /// connection whose process was not bound yet (its driver never
    /// spoke) ends here: if the bound process has exited meanwhile, the
    /// still-running process of that connection is the only one that can
    /// come back for the PASIDs, so they are bound to it and held over;
    /// otherwise the binding stays as it was.
    pub(super) fn take_qemu_exited(&mut self, vm: VmId) -> bool {
        let name = self.vm_name(vm).to_string();
        let Some(rec) = self.record_mut(vm) else {
            return false;
        };
        let pending = rec.qemu_pending.take();
        if !rec.qemu_exited {
            return false;
        }
        if let Some(peer) = pending {
            info!(
                "vm={name} event=qemu-bound pid={} reason=\"bound process exited\"",
                peer.pid
            );
            self.set_qemu(vm, Some(peer));
            return false;
        }
        let Some(rec) = self.record_mut(vm) else {
            return false;
        };
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
    use crate::registry::test_registry as registry;

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
        crate::registry::test_allocs(reg, vm, n as u64);
    }

    fn held(reg: &Registry, vm: VmId) -> usize {
        reg.space().held_by(vm.0).len()
    }

    /// Held over, bound to `pid`, holding `n`.
    fn held_over(pid: u32, n: usize) -> (Registry, VmId) {
        let (mut reg, vm) = registry(Duration::from_secs(300));
        connected(&mut reg, vm, pid, n);
        reg.set_connected(vm, false);
        reg.end_connection(vm, Instant::now());
        (reg, vm)
    }

    fn probe(reg: &mut Registry, vm: VmId) {
        reg.handle(
            vm,
            Request::Alloc {
                tag: 99,
                min: 1,
                max: 255,
            },
        );
    }

    /// A QEMU that connects to a held-over VM and leaves without its
    /// driver speaking (a refused `virsh restore`) does not take the
    /// binding: its exit releases nothing, the bound process's still does.
    #[test]
    fn a_connection_whose_driver_never_spoke_does_not_take_the_binding() {
        let (mut reg, vm) = held_over(100, 3);
        reg.set_connected(vm, true);
        reg.bind_qemu(vm, peer(200));
        assert_eq!(reg.bound_qemu(vm).map(|q| q.pid), Some(100));
        reg.set_connected(vm, false);
        reg.end_connection(vm, Instant::now());
        assert_eq!(reg.qemu_exited(vm, 200, false), 0);
        assert_eq!(held(&reg, vm), 3);
        assert!(reg.vms()[0].held_over_for.is_some());
        assert_eq!(reg.qemu_exited(vm, 100, false), 3);

        // Unbound by detach --keep: the same, and nothing is released.
        let (mut reg, vm) = held_over(100, 2);
        reg.unbind_qemu(vm);
        reg.set_connected(vm, true);
        reg.bind_qemu(vm, peer(200));
        reg.set_connected(vm, false);
        reg.end_connection(vm, Instant::now());
        assert_eq!(reg.qemu_exited(vm, 200, false), 0);
        assert_eq!(held(&reg, vm), 2);
    }

    /// Once the new connection's driver speaks, the binding is its own:
    /// the old process's exit ends nothing, the new one's does.
    #[test]
    fn the_binding_moves_when_the_driver_speaks() {
        let (mut reg, vm) = held_over(100, 3);
        reg.set_connected(vm, true);
        reg.bind_qemu(vm, peer(200));
        probe(&mut reg, vm);
        assert_eq!(reg.bound_qemu(vm).map(|q| q.pid), Some(200));
        assert_eq!(reg.qemu_exited(vm, 100, false), 0);
        reg.set_connected(vm, false);
        reg.end_connection(vm, Instant::now());
        assert_eq!(held(&reg, vm), 4);
        assert_eq!(reg.qemu_exited(vm, 200, false), 4);
        assert_eq!(held(&reg, vm), 0);
    }

    /// The bound process exits while a connection whose driver has not
    /// spoken is up: at that connection's end the PASIDs are bound to its
    /// process and held over, not released (it is the only one left that
    /// can come back for them); its own exit then releases them.
    #[test]
    fn a_silent_connection_outliving_the_bound_process_takes_the_binding() {
        let (mut reg, vm) = held_over(100, 3);
        reg.set_connected(vm, true);
        reg.bind_qemu(vm, peer(200));
        assert_eq!(reg.qemu_exited(vm, 100, false), 0, "connected: noted");
        reg.set_connected(vm, false);
        reg.end_connection(vm, Instant::now());
        assert_eq!(held(&reg, vm), 3);
        assert_eq!(reg.bound_qemu(vm).map(|q| q.pid), Some(200));
        assert_eq!(reg.qemu_exited(vm, 200, false), 3);
        assert_eq!(held(&reg, vm), 0);
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
