// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Messages of the control socket, shared by the daemon and `pasidctl`.
//!
//! One JSON object per line in each direction. A request names a command;
//! the reply is `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::logfmt::Value;

/// Longest request line the daemon reads.
pub const MAX_REQUEST_LINE: usize = 4096;

/// A control command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    // Unit variants would accept unknown fields; empty structs reject them.
    /// Every allocated PASID with its holders, or (with `vm`) those that VM
    /// holds a reference on.
    Pasids {
        /// Only PASIDs this VM holds; an unknown VM is an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vm: Option<String>,
    },
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
    /// Drop every reference a VM holds. A VM whose frontend is connected
    /// is refused unless `force` is true.
    Release {
        /// VM name.
        vm: String,
        /// Release even while the VM is connected (its running guest loses
        /// PASIDs its devices may still use).
        #[serde(default)]
        force: bool,
    },
    /// Change a VM's quota.
    Quota {
        /// VM name.
        vm: String,
        /// New quota.
        quota: u32,
    },
}

/// The request as `key=value` log fields, e.g. `cmd=quota vm=web quota=5`;
/// names are quoted when they need it.
impl fmt::Display for ControlRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlRequest::Pasids { vm: None } => f.write_str("cmd=pasids"),
            ControlRequest::Pasids { vm: Some(vm) } => write!(f, "cmd=pasids vm={}", Value(vm)),
            ControlRequest::Vms {} => f.write_str("cmd=vms"),
            ControlRequest::Stats {} => f.write_str("cmd=stats"),
            ControlRequest::Metrics {} => f.write_str("cmd=metrics"),
            ControlRequest::Get { holder, pasid } => {
                write!(f, "cmd=get holder={} pasid={pasid}", Value(holder))
            }
            ControlRequest::Put { holder, pasid } => {
                write!(f, "cmd=put holder={} pasid={pasid}", Value(holder))
            }
            ControlRequest::Release { vm, force } => {
                write!(f, "cmd=release vm={} force={force}", Value(vm))
            }
            ControlRequest::Quota { vm, quota } => {
                write!(f, "cmd=quota vm={} quota={quota}", Value(vm))
            }
        }
    }
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
            ControlRequest::Pasids { vm: None }
        );
        let pasids = ControlRequest::Pasids {
            vm: Some("web".into()),
        };
        let text = serde_json::to_string(&pasids).unwrap();
        assert_eq!(text, r#"{"cmd":"pasids","vm":"web"}"#);
        assert_eq!(
            serde_json::from_str::<ControlRequest>(&text).unwrap(),
            pasids
        );
        // A client that does not know `force` asks for the safe release.
        assert_eq!(
            serde_json::from_str::<ControlRequest>(r#"{"cmd":"release","vm":"a"}"#).unwrap(),
            ControlRequest::Release {
                vm: "a".into(),
                force: false
            }
        );
        assert_eq!(
            serde_json::to_string(&ControlRequest::Metrics {}).unwrap(),
            r#"{"cmd":"metrics"}"#
        );
    }

    /// Requests log as fields; a name that would split the line is quoted.
    #[test]
    fn requests_display_as_log_fields() {
        let quota = ControlRequest::Quota {
            vm: "a".into(),
            quota: 5,
        };
        assert_eq!(quota.to_string(), "cmd=quota vm=a quota=5");
        let get = ControlRequest::Get {
            holder: "x\nvm=forged".into(),
            pasid: 17,
        };
        assert_eq!(get.to_string(), r#"cmd=get holder="x\nvm=forged" pasid=17"#);
        let release = ControlRequest::Release {
            vm: "web".into(),
            force: true,
        };
        assert_eq!(release.to_string(), "cmd=release vm=web force=true");
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
            r#"{"cmd":"pasids","vm":7}"#,
            r#"{"cmd":"release","vm":"a","force":"yes"}"#,
        ] {
            assert!(
                serde_json::from_str::<ControlRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
