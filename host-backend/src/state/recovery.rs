// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Recovery: the space and the VMs' replay windows built back from a
//! snapshot image and the journal records after it. The result is handed
//! over as values ([`Recovery::into_parts`]) for the registry to take.

use std::collections::BTreeMap;

use pasid_protocol::{RawRequest, Request, Response, Status};

use super::files::{Loaded, StateError, StateFiles};
use crate::pasid_space::{OwnerId, OwnerKind, PasidSpace};
use crate::registry::reconcile::{self, Reconciliation};
use crate::registry::record::{Answered, Record, RememberedVm, Reservation, StateImage};

/// The state being recovered: the space, its identifier, and what durable
/// state remembers of each VM.
#[derive(Debug)]
pub struct Recovery {
    space: PasidSpace,
    space_id: u64,
    vms: BTreeMap<String, RememberedVm>,
    /// Reconciles begun and not yet ended, by owner name.
    reconciling: BTreeMap<String, Reconciliation>,
}

/// Rebuilds the state the directory holds over a fresh `space`: the
/// snapshot, then every journal record on top of it. `space_id` is used
/// only if the snapshot has none (a new directory).
pub fn recover(
    space: PasidSpace,
    space_id: u64,
    files: &StateFiles,
    loaded: &Loaded,
) -> Result<Recovery, StateError> {
    let mut recovery = Recovery::from_image(space, space_id, &loaded.image).map_err(|problem| {
        StateError::Corrupt {
            path: files.snapshot_path(loaded.slot),
            problem,
        }
    })?;
    for commit in &loaded.commits {
        for record in &commit.records {
            recovery
                .apply(record)
                .map_err(|problem| StateError::Corrupt {
                    path: files.journal_path(),
                    problem: format!(
                        "frame {} at byte {} cannot follow the state before it: {problem}",
                        commit.seq, commit.offset
                    ),
                })?;
        }
    }
    Ok(recovery)
}

impl Recovery {
    /// Rebuilds the state of a snapshot image over a fresh `space`. Errors
    /// say what in the image cannot be true. `space_id` is used only if the
    /// image has none (a new directory).
    pub fn from_image(
        mut space: PasidSpace,
        space_id: u64,
        image: &StateImage,
    ) -> Result<Self, String> {
        let space_id = match image.space_id {
            0 => space_id,
            kept => kept,
        };
        let mut vms = BTreeMap::new();
        // A vacant index holds a placeholder while the owners after it are
        // added in order, so each keeps its index; then it is forgotten.
        let mut vacant = Vec::new();
        for (index, owner) in image.owners.iter().enumerate() {
            if owner.is_vacant() {
                let placeholder = space
                    .add_owner(
                        &format!("\0vacant-{index}"),
                        OwnerKind::Host,
                        owner.limits.clone(),
                    )
                    .map_err(|e| format!("owner {index} (vacant): {e}"))?;
                vacant.push(placeholder);
                continue;
            }
            let id = space
                .add_owner(&owner.name, owner.kind, owner.limits.clone())
                .map_err(|e| format!("owner {index} ({:?}): {e}", owner.name))?;
            for &(pasid, refs) in &owner.holdings {
                space.restore(id, pasid, refs).map_err(|e| {
                    format!(
                        "{} {:?} holds PASID {pasid} ({refs} references), which cannot be \
                         restored: {e}{}",
                        kind_name(owner.kind),
                        owner.name,
                        hint_for(&space, pasid)
                    )
                })?;
            }
            if owner.kind == OwnerKind::Vm {
                vms.insert(
                    owner.name.clone(),
                    RememberedVm {
                        name: owner.name.clone(),
                        configured: owner.configured.clone(),
                        window: owner.window.clone(),
                        peer: owner.peer,
                        reservation: None,
                    },
                );
            }
        }
        for id in vacant {
            space.forget_owner(id).map_err(|e| e.to_string())?;
        }
        let mut recovery = Recovery {
            space,
            space_id,
            vms,
            reconciling: BTreeMap::new(),
        };
        for reservation in &image.reservations {
            recovery.apply_reservation(reservation)?;
        }
        Ok(recovery)
    }

    /// A reservation begins (the VM takes a reference on each listed PASID
    /// it does not hold yet, which must be free) or ends.
    fn apply_reservation(&mut self, reservation: &Reservation) -> Result<(), String> {
        let id = self.owner_at(reservation.owner)?;
        let name = self.name_of(id);
        if !reservation.is_end() {
            let held = self.space.held_by(id);
            for &pasid in &reservation.pasids {
                if held.contains(&pasid) {
                    continue;
                }
                if !self.space.is_free(pasid) {
                    return Err(format!(
                        "reservation for {name:?} of PASID {pasid}, which another owner holds"
                    ));
                }
                self.space
                    .restore(id, pasid, 1)
                    .map_err(|e| format!("reservation for {name:?} of PASID {pasid}: {e}"))?;
            }
        }
        let vm = self
            .vms
            .get_mut(&name)
            .ok_or_else(|| format!("reservation for {name:?}, which is not a VM"))?;
        vm.reservation = (!reservation.is_end()).then(|| reservation.clone());
        Ok(())
    }

    fn owner_at(&self, index: u32) -> Result<OwnerId, String> {
        self.space
            .owner_at(index)
            .ok_or_else(|| format!("owner index {index} does not exist"))
    }

    fn name_of(&self, id: OwnerId) -> String {
        self.space.owner_name(id).unwrap_or_default().to_string()
    }

    /// Applies one journal record. Errors say why the record cannot follow
    /// the state before it.
    pub fn apply(&mut self, record: &Record) -> Result<(), String> {
        match record {
            Record::Batch { owner, answers } => {
                let id = self.owner_at(*owner)?;
                let name = self.name_of(id);
                for a in answers.iter().filter(|a| !a.replayed) {
                    self.apply_answer(id, a).map_err(|e| {
                        format!("{name}'s answer at ring position {}: {e}", a.position)
                    })?;
                }
                let vm = self
                    .vms
                    .get_mut(&name)
                    .ok_or_else(|| format!("batch for {name:?}, which is not a VM"))?;
                vm.window = answers.clone();
            }
            Record::Reclaim { owner } => {
                let id = self.owner_at(*owner)?;
                self.space.reclaim(id);
                // The device is gone: nothing of it can be re-delivered,
                // and nothing is left reserved.
                let name = self.name_of(id);
                self.reconciling.remove(&name);
                if let Some(vm) = self.vms.get_mut(&name) {
                    vm.window = Vec::new();
                    vm.reservation = None;
                }
            }
            Record::Limits { owner, limits } => {
                let id = self.owner_at(*owner)?;
                self.space
                    .set_limits(id, limits.clone())
                    .map_err(|e| e.to_string())?;
            }
            Record::AddOwner { kind, name, limits } => {
                // Live owners always have a name (a VM's or holder's); an
                // empty host name is how a snapshot marks a vacant index,
                // so such an owner could not survive the next snapshot.
                if name.is_empty() {
                    return Err("a new owner with an empty name".into());
                }
                self.space
                    .add_owner(name, *kind, limits.clone())
                    .map_err(|e| e.to_string())?;
                if *kind == OwnerKind::Vm {
                    self.vms.insert(
                        name.clone(),
                        RememberedVm {
                            name: name.clone(),
                            configured: None,
                            window: Vec::new(),
                            peer: None,
                            reservation: None,
                        },
                    );
                }
            }
            Record::Get { owner, pasid } => {
                let id = self.owner_at(*owner)?;
                self.space.get(id, *pasid).map_err(|e| e.to_string())?;
            }
            Record::Put { owner, pasid } => {
                let id = self.owner_at(*owner)?;
                self.space.put(id, *pasid).map_err(|e| e.to_string())?;
            }
            Record::Reserve(reservation) => self.apply_reservation(reservation)?,
            Record::Forget { owner } => {
                let id = self.owner_at(*owner)?;
                let name = self.name_of(id);
                self.space.forget_owner(id).map_err(|e| e.to_string())?;
                self.vms.remove(&name);
            }
            Record::Peer { owner, peer } => {
                let id = self.owner_at(*owner)?;
                let name = self.name_of(id);
                let vm = self
                    .vms
                    .get_mut(&name)
                    .ok_or_else(|| format!("QEMU process for {name:?}, which is not a VM"))?;
                vm.peer = *peer;
            }
        }
        Ok(())
    }

    /// Redoes the effect of one recorded answer.
    fn apply_answer(&mut self, id: OwnerId, a: &Answered) -> Result<(), String> {
        let request = RawRequest::decode(&a.request)
            .parse()
            .map_err(|e| format!("request does not decode: {e}"))?;
        let response = Response::decode(&a.response);
        if Status::from_wire(response.status) != Some(Status::Ok) {
            return Ok(());
        }
        let name = self.name_of(id);
        match request {
            Request::Alloc { .. } => {
                let pasid = response.pasid;
                if !self.space.is_free(pasid) {
                    return Err(format!("ALLOC answered PASID {pasid}, which was not free"));
                }
                if let Some(progress) = self.reconciling.get_mut(&name) {
                    progress.name(pasid);
                }
                self.space.restore(id, pasid, 1).map_err(|e| e.to_string())
            }
            Request::Free { pasid, .. } => self
                .space
                .put(id, pasid)
                .map(|_| ())
                .map_err(|e| format!("FREE of PASID {pasid}: {e}")),
            Request::Reset { .. } => {
                self.space.reclaim(id);
                self.reconciling.remove(&name);
                Ok(())
            }
            Request::Grant { .. } => {
                for &pasid in a.list.as_slice() {
                    if let Some(progress) = self.reconciling.get_mut(&name) {
                        progress.name(pasid);
                    }
                    if !self.space.is_free(pasid) {
                        return Err(format!("GRANT answered PASID {pasid}, which was not free"));
                    }
                    self.space
                        .restore(id, pasid, 1)
                        .map_err(|e| format!("GRANT of PASID {pasid}: {e}"))?;
                }
                Ok(())
            }
            Request::Return { .. } => self
                .space
                .put_batch(id, a.list.as_slice())
                .map(|_| ())
                .map_err(|e| format!("RETURN of {:?}: {e}", a.list)),
            Request::Reconcile { first, last, .. } => {
                self.apply_reconcile(id, &name, (first, last), a)
            }
        }
    }

    /// Carries a RECONCILE out again; it must give the recorded results.
    fn apply_reconcile(
        &mut self,
        id: OwnerId,
        name: &str,
        (first, last): (bool, bool),
        a: &Answered,
    ) -> Result<(), String> {
        let mut progress = self.reconciling.remove(name);
        if progress.is_none() && !first {
            // The reconcile began before the snapshot this recovery started
            // from, which does not keep what it named. Keep every reference
            // the VM holds: a PASID held too long is safe, one dropped while
            // the guest uses it is not.
            let mut keep_all = Reconciliation::default();
            for pasid in self.space.held_by(id) {
                keep_all.name(pasid);
            }
            progress = Some(keep_all);
        }
        let settled = reconcile::settle(
            &mut self.space,
            id,
            &mut progress,
            first,
            last,
            a.list.as_slice(),
        )
        .map_err(|e| e.to_string())?;
        if let Some(progress) = progress {
            self.reconciling.insert(name.to_string(), progress);
        }
        if settled.results != a.results {
            return Err(format!(
                "RECONCILE of {:?} answered {:?}, but carried out again gives {:?}",
                a.list, a.results, settled.results
            ));
        }
        Ok(())
    }

    /// The recovered space, its identifier, and the VMs durable state
    /// remembers, in name order: what `Registry::restored` takes.
    pub fn into_parts(self) -> (PasidSpace, u64, Vec<RememberedVm>) {
        (self.space, self.space_id, self.vms.into_values().collect())
    }
}

fn kind_name(kind: OwnerKind) -> &'static str {
    match kind {
        OwnerKind::Vm => "VM",
        OwnerKind::Host => "host holder",
    }
}

/// What the operator can do about a holding the command line now forbids.
fn hint_for(space: &PasidSpace, pasid: u32) -> &'static str {
    if pasid > space.max_pasid() {
        " (beyond --pasid-bits; start with the width the state was written with)"
    } else if space.is_reserved(pasid) {
        " (--reserve now covers it; start without that reservation, release the holder, then \
         reserve)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use pasid_protocol::PasidList;
    use pasid_protocol::{Request, Status};

    use std::sync::Arc;

    use super::*;
    use crate::pasid_space::{OwnerLimits, SpaceConfig};
    use crate::registry::{ReclaimReason, Registry, RegistryError, VmId};
    use crate::state::Journal;

    /// A state directory a test re-opens. No forked test child may keep
    /// its lock held after the state that took it is dropped.
    struct StateDir {
        dir: tempfile::TempDir,
        _no_fork: std::sync::RwLockReadGuard<'static, ()>,
    }

    impl StateDir {
        fn new() -> Self {
            let _no_fork = crate::sandbox::no_forks();
            StateDir {
                dir: tempfile::tempdir().unwrap(),
                _no_fork,
            }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    fn limits() -> OwnerLimits {
        OwnerLimits {
            quota: 100,
            range: 1..=0xfffff,
        }
    }

    /// Opens (or re-opens, as a restarted daemon does) the state in `dir`
    /// with VMs a and b.
    fn open(dir: &Path) -> (Registry, VmId, VmId) {
        open_with_limit(dir, 1 << 20)
    }

    fn open_with_limit(dir: &Path, limit: u64) -> (Registry, VmId, VmId) {
        let (reg, vms, _) = open_vms(dir, &["a", "b"], limit);
        (reg, vms[0], vms[1])
    }

    /// Opens the state in `dir` with the VMs `names` on the command line.
    fn open_vms(dir: &Path, names: &[&str], limit: u64) -> (Registry, Vec<VmId>, Arc<Journal>) {
        let files = StateFiles::open(dir).unwrap();
        let loaded = files.load().unwrap();
        let space = PasidSpace::new(SpaceConfig::default()).unwrap();
        // A new ID each time, as each daemon start draws one.
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(100);
        let fresh = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (space, space_id, remembered) =
            recover(space, fresh, &files, &loaded).unwrap().into_parts();
        let mut reg = Registry::restored(space, space_id, remembered);
        let vms = names
            .iter()
            .map(|name| {
                reg.configure_vm(name, &format!("{name}.sock"), limits())
                    .unwrap()
            })
            .collect();
        let slot = loaded.slot ^ usize::from(loaded.generation > 0);
        let journal = Arc::new(
            Journal::start(files, &reg.image(), loaded.generation + 1, slot, limit).unwrap(),
        );
        reg.attach_change_log(journal.clone());
        (reg, vms, journal)
    }

    /// PASIDs the owner `name` holds.
    fn held_by(reg: &Registry, name: &str) -> Vec<u32> {
        reg.space().held_by(reg.space().owner(name).unwrap())
    }

    fn alloc(tag: u64) -> Request {
        Request::Alloc {
            tag,
            min: 1,
            max: 0xfffff,
        }
    }

    /// Ends the batch and waits for it to be durable, as a drain does.
    fn commit(reg: &mut Registry, vm: VmId) {
        reg.end_batch(vm).unwrap().wait();
    }

    fn replayed(reg: &Registry, name: &str) -> u64 {
        reg.vms()
            .into_iter()
            .find(|v| v.name == name)
            .map(|v| v.counters.replayed)
            .unwrap_or_default()
    }

    #[test]
    fn re_delivered_requests_get_their_first_answer() {
        let dir = StateDir::new();
        let (mut reg, a, _) = open(dir.path());
        let space_id = reg.stats().space_id;
        let first = reg
            .answer(a, 65535, alloc(1), &PasidList::default())
            .response;
        let second = reg.answer(a, 0, alloc(2), &PasidList::default()).response;
        commit(&mut reg, a);
        // Crash: the answers were durable, but never put on the used ring.
        drop(reg);

        let (mut reg, a, b) = open(dir.path());
        assert_eq!(
            reg.stats().space_id,
            space_id,
            "the same space, the same ID"
        );
        assert_eq!(
            reg.answer(a, 65535, alloc(1), &PasidList::default())
                .response,
            first
        );
        assert_eq!(
            reg.answer(a, 0, alloc(2), &PasidList::default()).response,
            second
        );
        let third = reg.answer(a, 1, alloc(3), &PasidList::default()).response;
        commit(&mut reg, a);
        assert_eq!(replayed(&reg, "a"), 2);
        let mut held = vec![first.pasid, second.pasid, third.pasid];
        held.sort_unstable();
        held.dedup();
        assert_eq!(held.len(), 3, "one PASID per request: {held:?}");
        assert_eq!(held_by(&reg, "a"), held);
        // b never gets any of them.
        let theirs = reg.answer(b, 0, alloc(9), &PasidList::default()).response;
        assert!(!held.contains(&theirs.pasid));

        // Position 1 lay past the window: it is gone, and the same bytes at
        // a window position are a new request again.
        let again = reg.answer(a, 0, alloc(2), &PasidList::default()).response;
        assert_ne!(again.pasid, second.pasid);
        assert_eq!(replayed(&reg, "a"), 2);
    }

    fn settle(reg: &Registry) {
        if let Some(point) = reg.commit_point() {
            point.wait();
        }
    }

    fn owner_index(reg: &Registry, name: &str) -> Option<u32> {
        reg.space().owner(name).map(OwnerId::as_u32)
    }

    /// Host holders are forgotten at their last put, and their indexes are
    /// reused, the same way live, from the journal and from a snapshot
    /// with vacant indexes: every restart finds each holder at its index.
    #[test]
    fn forgotten_holders_survive_restarts_at_their_indexes() {
        let dir = StateDir::new();
        let (mut reg, a, _) = open(dir.path());
        let p = reg
            .answer(a, 0, alloc(1), &PasidList::default())
            .response
            .pasid;
        commit(&mut reg, a);
        for h in ["h1", "h2", "h3"] {
            reg.host_get(h, p).unwrap();
        }
        // A get that fails leaves no holder behind, and nothing to replay.
        assert!(reg.host_get("ghost", p + 100).is_err());
        assert_eq!(owner_index(&reg, "ghost"), None);
        reg.host_put("h1", p).unwrap();
        reg.host_put("h2", p).unwrap();
        assert_eq!(reg.stats().space.owners, 3, "a, b and h3");
        settle(&reg);
        drop(reg);

        // From the journal: the same holes.
        let (mut reg, _, _) = open(dir.path());
        assert_eq!(reg.stats().space.owners, 3);
        assert_eq!(owner_index(&reg, "h1"), None);
        assert_eq!(owner_index(&reg, "h3"), Some(4));
        // The lowest hole goes to the next holder.
        reg.host_get("h4", p).unwrap();
        assert_eq!(owner_index(&reg, "h4"), Some(2));
        settle(&reg);
        drop(reg);

        // From the snapshot written at that start (holes 2 and 3) plus the
        // journal after it (h4 into hole 2).
        let (mut reg, _, _) = open(dir.path());
        assert_eq!(owner_index(&reg, "h4"), Some(2));
        assert_eq!(owner_index(&reg, "h3"), Some(4));
        assert_eq!(reg.stats().space.owners, 4);
        let holders: Vec<String> = reg
            .space()
            .info(p)
            .unwrap()
            .holders
            .into_iter()
            .map(|h| h.owner)
            .collect();
        assert_eq!(holders, ["a", "h3", "h4"]);
        reg.host_put("h3", p).unwrap();
        assert_eq!(reg.space().owner_index_end(), 3, "trailing holes dropped");
        settle(&reg);
        drop(reg);
        let (reg, _, _) = open(dir.path());
        assert_eq!(reg.space().owner_index_end(), 3);
        assert_eq!(owner_index(&reg, "h4"), Some(2));
    }

    /// A VM the command line no longer names is forgotten once released:
    /// `vms` lists it no more, and a restart does not bring it back.
    #[test]
    fn a_released_unconfigured_vm_is_forgotten() {
        let dir = StateDir::new();
        let (mut reg, vms, _) = open_vms(dir.path(), &["a", "b", "c"], 1 << 20);
        let c = vms[2];
        reg.answer(c, 0, alloc(1), &PasidList::default());
        commit(&mut reg, c);
        drop(reg);
        // Restarted without c on the command line.
        let (mut reg, a, _) = open(dir.path());
        let names =
            |reg: &Registry| -> Vec<String> { reg.vms().into_iter().map(|v| v.name).collect() };
        assert_eq!(names(&reg), ["a", "b", "c"]);
        // A configured VM stays after its release.
        reg.answer(a, 0, alloc(2), &PasidList::default());
        commit(&mut reg, a);
        assert_eq!(reg.operator_release("a", false), Ok(1));
        assert_eq!(reg.operator_release("c", false), Ok(1));
        assert_eq!(names(&reg), ["a", "b"]);
        assert_eq!(reg.stats().space.owners, 2);
        settle(&reg);
        drop(reg);
        let (reg, _, _) = open(dir.path());
        assert_eq!(names(&reg), ["a", "b"]);
        assert_eq!(reg.vm("c"), Err(RegistryError::UnknownVm("c".into())));
    }

    #[test]
    fn holder_names_are_validated_like_vm_names() {
        let dir = StateDir::new();
        let (mut reg, a, _) = open(dir.path());
        let p = reg
            .answer(a, 0, alloc(1), &PasidList::default())
            .response
            .pasid;
        for bad in [
            "",
            "two words",
            "tab\there",
            "line\nbreak",
            "q\"uote",
            &"x".repeat(65),
        ] {
            assert_eq!(
                reg.host_get(bad, p),
                Err(RegistryError::InvalidHolder(bad.to_string())),
                "{bad:?}"
            );
            assert_eq!(
                reg.host_put(bad, p),
                Err(RegistryError::InvalidHolder(bad.to_string())),
                "{bad:?}"
            );
        }
        assert_eq!(reg.stats().space.owners, 2);
        assert_eq!(reg.host_get("drv-0.a_b", p), Ok(2));
        // A holder that holds nothing (any more) gets the PASID's own error.
        assert_eq!(reg.host_put("drv-0.a_b", p), Ok(false));
        assert_eq!(
            reg.host_put("drv-0.a_b", p),
            Err(RegistryError::Ref(crate::pasid_space::RefError::NotOwner(
                p
            )))
        );
        assert_eq!(
            reg.host_put("drv-0.a_b", p + 1),
            Err(RegistryError::Ref(crate::pasid_space::RefError::NotFound(
                p + 1
            )))
        );
    }

    #[test]
    fn a_replay_after_a_replay_still_matches() {
        let dir = StateDir::new();
        let (mut reg, a, _) = open(dir.path());
        let first = reg.answer(a, 7, alloc(1), &PasidList::default()).response;
        commit(&mut reg, a);
        drop(reg);
        // Restart, replay, crash again before the used ring was written.
        let (mut reg, a, _) = open(dir.path());
        assert_eq!(
            reg.answer(a, 7, alloc(1), &PasidList::default()).response,
            first
        );
        commit(&mut reg, a);
        drop(reg);
        let (mut reg, a, _) = open(dir.path());
        assert_eq!(
            reg.answer(a, 7, alloc(1), &PasidList::default()).response,
            first
        );
        assert_eq!(held_by(&reg, "a"), vec![first.pasid]);
    }

    #[test]
    fn different_bytes_at_a_window_position_are_carried_out() {
        let dir = StateDir::new();
        let (mut reg, a, _) = open(dir.path());
        let first = reg.answer(a, 3, alloc(1), &PasidList::default()).response;
        commit(&mut reg, a);
        drop(reg);
        let (mut reg, a, _) = open(dir.path());
        let other = reg.answer(a, 3, alloc(2), &PasidList::default()).response;
        assert_eq!(Status::from_wire(other.status), Some(Status::Ok));
        assert_ne!(other.pasid, first.pasid);
        assert_eq!(replayed(&reg, "a"), 0);
    }

    #[test]
    fn reset_free_and_disconnect_are_replayed_from_the_journal() {
        let dir = StateDir::new();
        let (mut reg, a, b) = open(dir.path());
        let p: Vec<u32> = (0..4u16)
            .map(|t| {
                reg.answer(a, t, alloc(u64::from(t)), &PasidList::default())
                    .response
                    .pasid
            })
            .collect();
        commit(&mut reg, a);
        reg.answer(
            a,
            4,
            Request::Free {
                tag: 10,
                pasid: p[0],
            },
            &PasidList::default(),
        );
        reg.answer(a, 5, Request::Reset { tag: 11 }, &PasidList::default());
        let after = reg.answer(a, 6, alloc(12), &PasidList::default()).response;
        commit(&mut reg, a);
        let q = reg.answer(b, 0, alloc(20), &PasidList::default()).response;
        commit(&mut reg, b);
        reg.host_get("drv", q.pasid).unwrap();
        reg.reclaim_vm(b, ReclaimReason::Disconnect);
        reg.commit_point().unwrap().wait();
        drop(reg);

        let (mut reg, _, b) = open(dir.path());
        assert_eq!(held_by(&reg, "a"), vec![after.pasid]);
        assert!(held_by(&reg, "b").is_empty());
        let drv = reg.space().owner("drv").unwrap();
        assert_eq!(reg.space().held_by(drv), vec![q.pasid]);
        // The disconnect ended b's device: nothing of it is replayed.
        // b's window held alloc(20) at position 0: the same bytes there
        // are a new request now.
        let again = reg.answer(b, 0, alloc(20), &PasidList::default()).response;
        assert_eq!(replayed(&reg, "b"), 0);
        assert_ne!(again.pasid, q.pasid);
    }

    /// Found by fuzzing (state_decode): an owner added with an empty name
    /// would read back from the next snapshot as a vacant index.
    #[test]
    fn a_new_owner_without_a_name_is_refused() {
        let space = PasidSpace::new(SpaceConfig::default()).unwrap();
        let mut recovery = Recovery::from_image(space, 1, &StateImage::default()).unwrap();
        let add = |name: &str| Record::AddOwner {
            kind: OwnerKind::Host,
            name: name.into(),
            limits: limits(),
        };
        assert_eq!(
            recovery.apply(&add("")),
            Err("a new owner with an empty name".to_string())
        );
        assert_eq!(recovery.apply(&add("drv")), Ok(()));
    }

    #[test]
    fn compaction_keeps_everything() {
        let dir = StateDir::new();
        // Every frame takes the journal past 64 bytes: each commit compacts.
        let (mut reg, vms, journal) = open_vms(dir.path(), &["a", "b"], 64);
        let a = vms[0];
        let mut held = Vec::new();
        for t in 0..64u16 {
            held.push(
                reg.answer(a, t, alloc(u64::from(t)), &PasidList::default())
                    .response
                    .pasid,
            );
            let point = reg.end_batch(a).unwrap();
            point.wait();
            assert!(journal.needs_compaction());
            journal.compact(|| reg.image());
            assert!(!journal.needs_compaction());
        }
        // Only the header is left, then the zeros written ahead: everything
        // is in the snapshot.
        drop(journal);
        let journal = std::fs::read(dir.path().join("journal")).unwrap();
        assert!(journal[24..].iter().all(|&b| b == 0));
        assert_eq!(reg.journal_stats().unwrap().journal_bytes, 24);
        assert_eq!(reg.journal_stats().unwrap().compactions, 64);
        drop(reg);
        let (mut reg, a, _) = open(dir.path());
        held.sort_unstable();
        assert_eq!(held_by(&reg, "a"), held);
        // The last batch is still the replay window after compaction.
        let last = reg.answer(a, 63, alloc(63), &PasidList::default()).response;
        assert_eq!(replayed(&reg, "a"), 1);
        assert!(held.contains(&last.pasid));
    }
}
