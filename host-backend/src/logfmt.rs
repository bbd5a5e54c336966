// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Free-form values in `key=value` log lines.
//!
//! Log lines are `key=value` pairs that tools split at spaces. A value that
//! comes from outside (a socket path, an error's text, a name from durable
//! state) could hold a space, a quote, an `=` or a newline, and would then
//! read as other fields or as a second line. [`Value`] writes such a value
//! in double quotes with `"`, `\` and control characters escaped, and any
//! other value as it is, so `socket=/run/a.sock` stays plain.

use std::fmt::{self, Display, Write};

/// A value for a `key=value` log field, quoted when it needs it; see the
/// module docs. Wraps anything with a `Display` form.
#[derive(Clone, Copy, Debug)]
pub struct Value<T>(pub T);

/// Whether `c` can stand in an unquoted value.
fn plain(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '='))
}

impl<T: Display> Display for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        if !text.is_empty() && text.chars().all(plain) {
            return f.write_str(&text);
        }
        f.write_char('"')?;
        for c in text.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(v: &str) -> String {
        Value(v).to_string()
    }

    #[test]
    fn plain_values_stay_as_they_are() {
        assert_eq!(show("/run/vpasid/web.sock"), "/run/vpasid/web.sock");
        assert_eq!(show("vm-1.a_b"), "vm-1.a_b");
        assert_eq!(Value(17).to_string(), "17");
    }

    /// Each character that would split or fake a field is quoted and
    /// escaped, so one value stays one field on one line.
    #[test]
    fn values_that_would_split_a_line_are_quoted() {
        assert_eq!(show(""), r#""""#);
        assert_eq!(show("a b"), r#""a b""#);
        assert_eq!(show("a=b"), r#""a=b""#);
        assert_eq!(show(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(show(r"C:\x"), r#""C:\\x""#);
        assert_eq!(
            show("a\nvm=evil op=x"),
            r#""a\nvm=evil op=x""#,
            "a newline cannot start a second line"
        );
        assert_eq!(show("tab\there\r"), r#""tab\there\r""#);
        assert_eq!(show("bell\u{7}"), r#""bell\u{7}""#);
        assert_eq!(show("nbsp\u{a0}x"), "\"nbsp\u{a0}x\"");
    }

    #[test]
    fn display_forms_are_quoted_too() {
        let e = std::io::Error::other("broken pipe here");
        assert_eq!(Value(&e).to_string(), r#""broken pipe here""#);
    }
}
