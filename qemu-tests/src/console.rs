// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The text protocol spoken with the guest's shell over the serial console.
//!
//! The guest's `/init` runs busybox `sh` on `ttyS0` with echo off, so only
//! output comes back, interleaved with kernel messages. Each command is sent
//! as one shell list that prints a start marker, runs the command in a
//! subshell with every output line prefixed by `|`, then prints an end
//! marker with the exit status. The markers are assembled by `printf` from
//! pieces, so the command text itself can never match them, and the `|`
//! prefix tells command output from kernel lines (including `dmesg` output,
//! which looks like kernel lines but is prefixed).

/// Printed by `/init` before every shell it starts (at boot and whenever a
/// shell exits).
pub const READY_MARKER: &str = "VPASID_GUEST_READY";

/// Printed by the kernel when it panics.
pub const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// The longest command accepted: the guest's tty buffers at most 4095
/// unread bytes of one line in canonical mode.
pub const MAX_COMMAND_LEN: usize = 3000;

/// Prefix of each output line of a command.
const OUTPUT_PREFIX: char = '|';

/// The start marker line of command `id`, as the guest prints it.
pub fn start_marker(id: u64) -> String {
    format!("__VPS_{id}_\n")
}

/// The start of the end marker of command `id`, as the guest prints it; the
/// exit status and `__` follow.
pub fn end_marker_prefix(id: u64) -> String {
    format!("__VPE_{id}_")
}

/// The bytes to write to the console to run `cmd` as command `id`.
pub fn command_payload(id: u64, cmd: &str) -> String {
    // pipefail: the status is the subshell's, not sed's.
    format!(
        "set -o pipefail; printf '%s_%s_\\n' __VPS {id}; ( {cmd}\n) </dev/null 2>&1 | sed 's/^/{OUTPUT_PREFIX}/'; printf '%s_%s_%s__\\n' __VPE {id} \"$?\"\n"
    )
}

/// A finished command found in the console text.
#[derive(Debug, PartialEq, Eq)]
pub struct Finished {
    /// The exit status.
    pub exit_code: i32,
    /// The command's output lines, prefix removed.
    pub output: String,
    /// Index in the searched text just past the end marker's line.
    pub consumed: usize,
}

/// Looks for command `id`'s start and end markers in `text` (console output
/// since the command was sent, `\r` removed). `None` until both are there.
pub fn parse_finished(text: &str, id: u64) -> Option<Finished> {
    let start = start_marker(id);
    let body_start = text.find(&start)? + start.len();
    let prefix = end_marker_prefix(id);
    let mut search = body_start;
    loop {
        let at = search + text[search..].find(&prefix)?;
        let rest = &text[at + prefix.len()..];
        let digits = rest
            .char_indices()
            .take_while(|&(i, c)| c.is_ascii_digit() || (i == 0 && c == '-'))
            .count();
        if rest[digits..].starts_with("__") {
            if let Ok(exit_code) = rest[..digits].parse::<i32>() {
                let after = at + prefix.len() + digits + 2;
                let consumed = text[after..]
                    .find('\n')
                    .map_or(text.len(), |i| after + i + 1);
                return Some(Finished {
                    exit_code,
                    output: extract_output(&text[body_start..at]),
                    consumed,
                });
            }
        } else if digits == rest.len() || rest[digits..] == *"_" {
            // The marker is still arriving.
            return None;
        }
        search = at + prefix.len();
    }
}

/// Whether `line` starts with a kernel log timestamp such as `[   12.3456]`.
pub fn is_kernel_log_line(line: &str) -> bool {
    kernel_timestamp_len(line).is_some()
}

/// The length of a leading `[ <secs>.<frac>]`, if `s` starts with one.
fn kernel_timestamp_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'[') {
        return None;
    }
    let mut i = 1;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let int_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if i == int_start || b.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    let frac_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    (i > frac_start && b.get(i) == Some(&b']')).then_some(i + 1)
}

/// The position of a kernel timestamp inside `line`, after its start.
fn embedded_kernel_timestamp(line: &str) -> Option<usize> {
    line.char_indices()
        .skip(1)
        .find(|&(i, c)| c == '[' && kernel_timestamp_len(&line[i..]).is_some())
        .map(|(i, _)| i)
}

/// Keeps the `|`-prefixed lines of `body`, prefix removed. A kernel message
/// that cut into an output line (the line then holds a timestamp, and its
/// tail follows the kernel message as an unprefixed line) is spliced out.
fn extract_output(body: &str) -> String {
    let mut out = String::new();
    // An output line cut by a kernel message, waiting for its tail.
    let mut cut: Option<&str> = None;
    for line in body.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if let Some(content) = bare.strip_prefix(OUTPUT_PREFIX) {
            if let Some(head) = cut.take() {
                out.push_str(head);
                out.push('\n');
            }
            match embedded_kernel_timestamp(content) {
                Some(at) => cut = Some(&content[..at]),
                None => {
                    out.push_str(content);
                    out.push('\n');
                }
            }
        } else if let Some(head) = cut.take() {
            if is_kernel_log_line(bare) {
                // Another kernel line: the tail may still follow.
                cut = Some(head);
            } else {
                out.push_str(head);
                out.push_str(bare);
                out.push('\n');
            }
        }
    }
    if let Some(head) = cut {
        out.push_str(head);
        out.push('\n');
    }
    out
}

/// Incremental UTF-8 decoding of console bytes that may split characters
/// across reads; invalid bytes become U+FFFD. `\r` is dropped.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
}

impl Decoder {
    /// Decodes `bytes` (appended to any incomplete tail of the last call).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: keep it.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
        out.retain(|c| c != '\r');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the guest prints for `command_payload(id, _)` with `lines` as
    /// the command's output.
    fn guest_output(id: u64, lines: &[&str], code: i32) -> String {
        let mut s = format!("guest# {}", start_marker(id));
        for l in lines {
            s.push_str(&format!("|{l}\n"));
        }
        s.push_str(&format!("__VPE_{id}_{code}__\nguest# "));
        s
    }

    #[test]
    fn payload_never_contains_its_markers() {
        let p = command_payload(7, "echo hi");
        assert!(!p.contains(&start_marker(7)));
        assert!(!p.contains(&end_marker_prefix(7)));
        assert!(!p.contains(READY_MARKER));
        assert!(p.ends_with('\n'));
    }

    #[test]
    fn parses_output_and_exit_code() {
        let text = guest_output(3, &["a", "b c"], 0);
        let f = parse_finished(&text, 3).unwrap();
        assert_eq!(f.exit_code, 0);
        assert_eq!(f.output, "a\nb c\n");
        assert_eq!(&text[f.consumed..], "guest# ");
    }

    #[test]
    fn nonzero_and_negative_exit_codes() {
        assert_eq!(
            parse_finished(&guest_output(1, &[], 127), 1)
                .unwrap()
                .exit_code,
            127
        );
        assert_eq!(
            parse_finished(&guest_output(1, &[], -1), 1)
                .unwrap()
                .exit_code,
            -1
        );
    }

    #[test]
    fn incomplete_until_end_marker_is_complete() {
        let text = guest_output(12, &["x"], 42);
        let cut = text.find("42__").unwrap();
        assert_eq!(parse_finished(&text[..cut], 12), None);
        assert_eq!(parse_finished(&text[..cut + 1], 12), None);
        assert_eq!(parse_finished(&text[..cut + 3], 12), None);
        assert_eq!(parse_finished(&text[..cut + 4], 12).unwrap().exit_code, 42);
    }

    #[test]
    fn other_ids_do_not_match() {
        let text = guest_output(12, &["x"], 0);
        assert_eq!(parse_finished(&text, 1), None);
        assert_eq!(parse_finished(&text, 2), None);
    }

    #[test]
    fn kernel_lines_are_dropped_but_dmesg_output_kept() {
        let text = format!(
            "{}[    1.500000] virtio_pasid: probe\n|[    0.000000] Linux version\n|ok\n__VPE_5_0__\n",
            start_marker(5)
        );
        let f = parse_finished(&text, 5).unwrap();
        assert_eq!(f.output, "[    0.000000] Linux version\nok\n");
    }

    #[test]
    fn kernel_message_cutting_a_line_is_spliced_out() {
        let text = format!(
            "{}|ok 1[   12.345678] virtio_pasid: oops\n[   12.400000] more\n00\n|next\n__VPE_5_0__\n",
            start_marker(5)
        );
        assert_eq!(parse_finished(&text, 5).unwrap().output, "ok 100\nnext\n");
    }

    #[test]
    fn kernel_timestamps() {
        assert!(is_kernel_log_line(
            "[    2.295878] Run /init as init process"
        ));
        assert!(is_kernel_log_line("[12345.6] x"));
        assert!(!is_kernel_log_line("[ 1] x"));
        assert!(!is_kernel_log_line("[x.1] x"));
        assert!(!is_kernel_log_line(" [ 1.2] x"));
        assert_eq!(embedded_kernel_timestamp("ab[ 1.2] c"), Some(2));
        assert_eq!(embedded_kernel_timestamp("[ 1.2] c"), None);
    }

    #[test]
    fn decoder_handles_split_characters_and_cr() {
        let mut d = Decoder::default();
        let bytes = "é\r\n".as_bytes();
        assert_eq!(d.push(&bytes[..1]), "");
        assert_eq!(d.push(&bytes[1..]), "é\n");
        assert_eq!(d.push(&[0xff, b'a']), "\u{fffd}a");
    }
}
