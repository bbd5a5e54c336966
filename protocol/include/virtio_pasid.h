/* SPDX-License-Identifier: (GPL-2.0 OR BSD-3-Clause) */
/*
 * virtio_pasid.h - wire format of the vpasid PASID allocation device.
 *
 * The Rust crate pasid-protocol is the source of truth; the test
 * protocol/tests/c_header.rs compiles this header and fails on any
 * difference in size, offset or constant. docs/protocol.md is the spec.
 */
#ifndef _VIRTIO_PASID_H
#define _VIRTIO_PASID_H

#include <linux/types.h>

/* Protocol version the device reports in virtio_pasid_config.version. */
#define VIRTIO_PASID_VERSION			1

/*
 * Default virtio device ID. No ID is assigned to PASID allocation; 37 is
 * in QEMU's name table and no Linux driver binds it (docs/protocol.md).
 */
#define VIRTIO_PASID_DEFAULT_DEVICE_ID		37

/* Virtqueues. */
#define VIRTIO_PASID_VQ_REQUEST			0
#define VIRTIO_PASID_VQ_MAX			1

/* Device-specific feature bits 0-23 are reserved for this device. */
#define VIRTIO_PASID_F_RESERVED_MASK		0x0000000000ffffffULL

/* Feature bit: GRANT and RETURN (PASID leases), and config.lease_max. */
#define VIRTIO_PASID_F_LEASE			0

/* Feature bit: RECONCILE, so a driver can resume on a new device. */
#define VIRTIO_PASID_F_RECONCILE		1

/* Most PASIDs in one GRANT, RETURN or RECONCILE; highest lease_max. */
#define VIRTIO_PASID_LEASE_BATCH_MAX		64
#define VIRTIO_PASID_LEASE_MAX			4096

/* PASIDs are at most 20 bits wide; 0 is never handed out. */
#define VIRTIO_PASID_MAX_BITS			20
#define VIRTIO_PASID_NONE			0xffffffffU

/* Request opcodes. */
#define VIRTIO_PASID_OP_ALLOC			1
#define VIRTIO_PASID_OP_FREE			2
#define VIRTIO_PASID_OP_RESET			3
#define VIRTIO_PASID_OP_GRANT			4	/* needs F_LEASE */
#define VIRTIO_PASID_OP_RETURN			5	/* needs F_LEASE */
#define VIRTIO_PASID_OP_RECONCILE		6	/* needs F_RECONCILE */

/* RECONCILE flags: the first and the last request of one reconcile. */
#define VIRTIO_PASID_RECONCILE_F_FIRST		1
#define VIRTIO_PASID_RECONCILE_F_LAST		2

/* RECONCILE: one __le32 per listed PASID follows the response. */
#define VIRTIO_PASID_RECONCILE_KEPT		0	/* held, still held */
#define VIRTIO_PASID_RECONCILE_GRANTED		1	/* was free, now held */
#define VIRTIO_PASID_RECONCILE_CONFLICT		2	/* someone else holds it */
#define VIRTIO_PASID_RECONCILE_REFUSED		3	/* not held: invalid or quota */

/* Response status codes. */
#define VIRTIO_PASID_S_OK			0
#define VIRTIO_PASID_S_NO_SPACE			1
#define VIRTIO_PASID_S_QUOTA_EXCEEDED		2
#define VIRTIO_PASID_S_INVALID			3
#define VIRTIO_PASID_S_NOT_OWNER		4
#define VIRTIO_PASID_S_NOT_FOUND		5
#define VIRTIO_PASID_S_INTERNAL			6
#define VIRTIO_PASID_S_RATE_LIMITED		7

/* Device-readable part of every request chain. */
struct virtio_pasid_req {
	__le16 opcode;
	__le16 flags;		/* must be 0 */
	__le32 pasid;		/* FREE: the PASID to release */
	__le64 tag;		/* driver-chosen, unique per driver instance */
	__le32 min;		/* ALLOC: lowest acceptable PASID */
	__le32 max;		/* ALLOC: highest acceptable PASID */
};

/*
 * Device-readable header of GRANT, RETURN and RECONCILE: the same 24 bytes,
 * with the pasid word split. RETURN, RECONCILE: count __le32 PASIDs follow
 * in the readable part. GRANT: up to count __le32 PASIDs follow the
 * response in the writable part, which must have room for all count of
 * them; RECONCILE: count __le32 results follow the response.
 */
struct virtio_pasid_lease_req {
	__le16 opcode;		/* GRANT, RETURN or RECONCILE */
	__le16 flags;		/* RECONCILE: F_FIRST, F_LAST; otherwise 0 */
	__le16 count;		/* GRANT: most wanted; RETURN: PASIDs listed;
				 * 1..VIRTIO_PASID_LEASE_BATCH_MAX;
				 * RECONCILE: PASIDs listed, 0..BATCH_MAX */
	__le16 cached;		/* held but not handed out, before this request */
	__le64 tag;
	__le32 min;		/* GRANT: lowest acceptable PASID */
	__le32 max;		/* GRANT: highest acceptable PASID */
};

/* Device-writable part of every request chain. */
struct virtio_pasid_resp {
	__le16 status;
	__le16 reserved;
	__le32 pasid;		/* ALLOC: the PASID; RESET: references released;
				 * GRANT, RETURN: PASIDs granted, returned;
				 * RECONCILE: references dropped on F_LAST;
				 * otherwise VIRTIO_PASID_NONE */
	__le64 tag;		/* copy of the request's tag (0 if the request
				 * was not 24 bytes long) */
};

/* Device configuration space, read-only for the driver. */
struct virtio_pasid_config {
	__le32 version;		/* VIRTIO_PASID_VERSION */
	__le32 pasid_bits;	/* width of the host's PASID space */
	__le32 pasid_min;	/* lowest PASID this VM may be given */
	__le32 pasid_max;	/* highest PASID this VM may be given */
	__le32 quota;		/* most PASIDs this VM may hold at once */
	__le32 lease_max;	/* most PASIDs the driver may keep cached;
				 * 0 without VIRTIO_PASID_F_LEASE */
	__le64 space_id;	/* identifies the host's PASID space */
};

#endif /* _VIRTIO_PASID_H */
