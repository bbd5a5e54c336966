// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Fuzzes the wire decoders with arbitrary bytes: a request, a response and
//! a config space each decode without panicking, re-encode to the same
//! bytes, and a request that parses says exactly what its bytes say (a
//! GRANT or RETURN: its `count` and `cached` are the halves of the `pasid`
//! word, `count` 1 to 64; a RECONCILE: the same with `count` 0 to 64, and
//! FIRST and LAST are its only flags). The bytes after the request, read as
//! a RETURN's or RECONCILE's list, decode and re-encode to themselves.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pasid_protocol::{
    decode_pasids, encode_pasids, Config, DecodeError, Opcode, RawRequest, Request, Response,
    Status, CONFIG_SIZE, LEASE_BATCH_MAX, RECONCILE_F_FIRST, RECONCILE_F_LAST, REQUEST_SIZE,
    RESPONSE_SIZE,
};

fn array<const N: usize>(data: &[u8]) -> Option<[u8; N]> {
    data.get(..N).and_then(|b| b.try_into().ok())
}

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = array::<REQUEST_SIZE>(data) {
        let raw = RawRequest::decode(&bytes);
        assert_eq!(raw.encode(), bytes, "raw request round trip");
        match raw.parse() {
            Ok(req) => {
                if req.opcode() == Opcode::Reconcile {
                    assert_eq!(raw.flags & !(RECONCILE_F_FIRST | RECONCILE_F_LAST), 0);
                } else {
                    assert_eq!(raw.flags, 0);
                }
                assert_eq!(req.tag(), raw.tag);
                assert_eq!(req.opcode() as u16, raw.opcode);
                match req {
                    Request::Alloc { min, max, .. } => assert_eq!((min, max), (raw.min, raw.max)),
                    Request::Free { pasid, .. } => assert_eq!(pasid, raw.pasid),
                    Request::Reset { .. } => {}
                    Request::Grant {
                        count,
                        cached,
                        min,
                        max,
                        ..
                    } => {
                        assert_eq!(u32::from(count) | u32::from(cached) << 16, raw.pasid);
                        assert_eq!((min, max), (raw.min, raw.max));
                        assert!((1..=LEASE_BATCH_MAX).contains(&count));
                        assert_eq!(req.writable_len(), RESPONSE_SIZE + 4 * usize::from(count));
                    }
                    Request::Return { count, cached, .. } => {
                        assert_eq!(u32::from(count) | u32::from(cached) << 16, raw.pasid);
                        assert!((1..=LEASE_BATCH_MAX).contains(&count));
                        assert_eq!(req.list_len(), 4 * usize::from(count));
                    }
                    Request::Reconcile {
                        first,
                        last,
                        count,
                        cached,
                        ..
                    } => {
                        assert_eq!(u32::from(count) | u32::from(cached) << 16, raw.pasid);
                        assert_eq!(first, raw.flags & RECONCILE_F_FIRST != 0);
                        assert_eq!(last, raw.flags & RECONCILE_F_LAST != 0);
                        assert!(count <= LEASE_BATCH_MAX);
                        assert_eq!(req.list_len(), 4 * usize::from(count));
                        assert_eq!(req.writable_len(), RESPONSE_SIZE + 4 * usize::from(count));
                    }
                }
                assert_eq!(RawRequest::decode(&req.encode()).parse(), Ok(req));
            }
            Err(DecodeError::NonZeroFlags(flags)) => {
                // The bits the opcode does not define (RECONCILE: FIRST and
                // LAST are defined).
                let defined = if raw.opcode == Opcode::Reconcile as u16 {
                    RECONCILE_F_FIRST | RECONCILE_F_LAST
                } else {
                    0
                };
                assert!(flags != 0 && flags == raw.flags & !defined);
            }
            Err(DecodeError::UnknownOpcode(op)) => {
                assert_eq!((raw.flags, op), (0, raw.opcode));
                assert!(Opcode::from_wire(op).is_none());
            }
            Err(DecodeError::BadCount(count)) => {
                let op = Opcode::from_wire(raw.opcode);
                assert!(matches!(
                    op,
                    Some(Opcode::Grant | Opcode::Return | Opcode::Reconcile)
                ));
                assert_eq!(u32::from(count), raw.pasid & 0xffff);
                if op == Some(Opcode::Reconcile) {
                    assert!(count > LEASE_BATCH_MAX);
                } else {
                    assert!(count == 0 || count > LEASE_BATCH_MAX);
                }
            }
        }
        let list = data.get(REQUEST_SIZE..).unwrap_or_default();
        let whole = list.get(..list.len() / 4 * 4).unwrap_or_default();
        let pasids = decode_pasids(list);
        assert_eq!(pasids.len(), list.len() / 4);
        assert_eq!(encode_pasids(&pasids), whole, "PASID list round trip");
    }
    if let Some(bytes) = array::<RESPONSE_SIZE>(data) {
        let resp = Response::decode(&bytes);
        assert_eq!(resp.encode(), bytes, "response round trip");
        if let Some(status) = Status::from_wire(resp.status) {
            assert_eq!(status as u16, resp.status);
        }
    }
    if let Some(bytes) = array::<CONFIG_SIZE>(data) {
        assert_eq!(Config::decode(&bytes).encode(), bytes, "config round trip");
    }
});
