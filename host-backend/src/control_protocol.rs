// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Messages of the control socket, shared by the daemon and `pasidctl`.
//!
//! One JSON object per line in each direction. A request names a command;
//! the reply is `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.

use serde::{Deserialize, Serialize};

/// Longest request line the daemon reads.
pub const MAX_REQUEST_LINE: usize = 4096;

/// A control command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    // Unit variants would accept unknown fields; empty structs reject them.
    /// Every allocated PASID with its holders.
    Pasids {},
    /// Every VM slot with usage and quota.
    Vms {},
    /// Whole-host figures.
    Stats {},
    /// Prometheus text exposition of every metric (the result is a string).
    Metrics {},
    /// A host holder takes a reference on a PASID.
    Get {
        /// Holder name.
        holder: String,
        /// The PASID.
        pasid: u32,
    },
    /// A host holder drops a reference.
    Put {
        /// Holder name.
        holder: String,
        /// The PASID.
        pasid: u32,
    },
    /// Drop every reference a VM holds.
    Release {
        /// VM name.
        vm: String,
    },
    /// Change a VM's quota.
    Quota {
        /// VM name.
        vm: String,
        /// New quota.
        quota: u32,
    },
}

/// A reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlReply {
    /// Whether the command succeeded.
    pub ok: bool,
    /// Its result, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// One line saying what went wrong, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlReply {
    /// A success carrying `result`.
    pub fn success(result: serde_json::Value) -> Self {
        ControlReply {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure saying `error`.
    pub fn failure(error: impl ToString) -> Self {
        ControlReply {
            ok: false,
            result: None,
            error: Some(error.to_string()),
        }
    }
}

/// Result of `get`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResult {
    /// The PASID.
    pub pasid: u32,
    /// Total references after the get.
    pub refs: u32,
}

/// Result of `put`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    /// The PASID.
    pub pasid: u32,
    /// Whether the put freed it.
    pub freed: bool,
}

/// Result of `release`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResult {
    /// The VM.
    pub vm: String,
    /// References released.
    pub released: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_stable_json() {
        let req = ControlRequest::Get {
            holder: "op".into(),
            pasid: 5,
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(text, r#"{"cmd":"get","holder":"op","pasid":5}"#);
        assert_eq!(serde_json::from_str::<ControlRequest>(&text).unwrap(), req);
        assert_eq!(
            serde_json::from_str::<ControlRequest>(r#"{"cmd":"pasids"}"#).unwrap(),
            ControlRequest::Pasids {}
        );
        assert_eq!(
            serde_json::to_string(&ControlRequest::Metrics {}).unwrap(),
            r#"{"cmd":"metrics"}"#
        );
    }

    #[test]
    fn malformed_requests_are_errors() {
        for bad in [
            "",
            "{}",
            r#"{"cmd":"nope"}"#,
            r#"{"cmd":"get","holder":"x"}"#,
            r#"{"cmd":"get","holder":"x","pasid":-1}"#,
            r#"{"cmd":"vms","extra":1}"#,
        ] {
            assert!(
                serde_json::from_str::<ControlRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
