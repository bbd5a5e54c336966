// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The PASID lists the wire carries and the device's whole answer: the
//! list after a RETURN's or RECONCILE's request, the list after a GRANT's
//! response, and a response together with its list. The host's parser
//! fills them from guest memory; its registry, records and state file
//! keep them; both sides of the wire agree on their bound.

use std::fmt;

use crate::{Response, LEASE_BATCH_MAX};

/// Most PASIDs one list carries.
const BATCH_MAX: usize = LEASE_BATCH_MAX as usize;

/// Up to [`LEASE_BATCH_MAX`] PASIDs, without a heap allocation: a RETURN's
/// list as the guest wrote it, or the PASIDs a GRANT granted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PasidList {
    len: u8,
    items: [u32; BATCH_MAX],
}

impl Default for PasidList {
    #[inline]
    fn default() -> Self {
        PasidList {
            len: 0,
            items: [0; BATCH_MAX],
        }
    }
}

impl fmt::Debug for PasidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl PasidList {
    /// The list of `pasids`; `None` if there are more than
    /// [`LEASE_BATCH_MAX`].
    #[inline]
    pub fn from_slice(pasids: &[u32]) -> Option<Self> {
        let mut list = PasidList::default();
        list.slots(pasids.len())?.copy_from_slice(pasids);
        Some(list)
    }

    /// The PASIDs, in list order.
    #[inline]
    pub fn as_slice(&self) -> &[u32] {
        self.items.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Number of PASIDs.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the list is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes the list `n` entries long and returns them to be filled;
    /// `None` (list unchanged) if `n` is above [`LEASE_BATCH_MAX`].
    #[inline]
    pub fn slots(&mut self, n: usize) -> Option<&mut [u32]> {
        let len = u8::try_from(n).ok().filter(|_| n <= BATCH_MAX)?;
        self.len = len;
        self.items.get_mut(..n)
    }

    /// Keeps only the first `n` entries.
    #[inline]
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            // n < len <= 64 fits in u8.
            self.len = u8::try_from(n).unwrap_or(0);
        }
    }
}

/// What the caller answers a well-formed request with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The response.
    pub response: Response,
    /// GRANT answered OK: the PASIDs granted, written after the response.
    /// Empty otherwise.
    pub granted: PasidList,
}

impl From<Response> for Answer {
    #[inline]
    fn from(response: Response) -> Self {
        Answer {
            response,
            granted: PasidList::default(),
        }
    }
}
