// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Man pages and shell completions generated from the clap definitions
//! ([`vhost_user_pasid::config::Args`] and [`vhost_user_pasid::ctl_cli::Cli`]),
//! so that they never drift from `--help`.
//!
//! `cargo xtask gen-docs` writes them into `host-backend/packaging/` where
//! they are committed; host-backend's `tests/packaging.rs` regenerates them
//! in memory and fails if the committed copies are stale.

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

use vhost_user_pasid::config::Args;
use vhost_user_pasid::ctl_cli::Cli;

/// Man section of both programs: system administration.
pub const MAN_SECTION: &str = "8";

/// One generated file, its path relative to `host-backend/packaging/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Where it goes, e.g. `man/pasidctl.8`.
    pub path: PathBuf,
    /// Its bytes.
    pub contents: Vec<u8>,
}

/// Sections the clap definitions cannot carry, in roff.
const DAEMON_EXTRA: &str = r#".SH ENVIRONMENT
.TP
\fBRUST_LOG\fR
Log filter in env_logger syntax, applied on top of \fB\-\-log\-level\fR: where
both speak it wins (\fBRUST_LOG=debug\fR overrides the option), and module
directives add to it (\fBRUST_LOG=vhost_user_pasid::control=debug\fR). Log
lines are written to standard error as \fBvm=NAME event=EVENT key=value ...\fR
(see docs/operations.md for the list of events).
.TP
\fBJOURNAL_STREAM\fR
Set by systemd. When it names the file standard error is (\fIDEV\fR:\fIINO\fR),
each log line is written as \fB<N>\fImessage\fR with its sd-daemon(3) priority
(error 3, warning 4, info 6, debug and trace 7) and no timestamp, so that the
journal keeps the levels (\fBjournalctl \-p warning\fR).
.TP
\fBNOTIFY_SOCKET\fR
Set by systemd for \fBType=notify\fR. The daemon sends \fBREADY=1\fR there once
every socket (VM slots, control, metrics) is bound and listening, the state of
\fB\-\-state\-dir\fR is loaded and privileges are dropped, before its seccomp
filter is installed. A path socket is needed;
a failure is logged (\fBevent=notify\fR) and the daemon serves anyway.
.SH SIGNALS
SIGTERM and SIGINT stop the daemon at once, even with VMs connected; it
removes the sockets it created. The VMs' devices then stop answering (QEMU
cannot reconnect them): stop the VMs first.
.SH FILES
.TP
\fB/run/vhost\-user\-pasid/control.sock\fR
Default control socket (mode 0600), used by \fBpasidctl\fR(8).
.TP
\fB/etc/default/vhost\-user\-pasid\fR
VM slots and options of the packaged systemd unit \fBvhost\-user\-pasid.service\fR.
.SH EXIT STATUS
.TP
\fB0\fR
after SIGTERM or SIGINT, or after \fB\-\-print\-capabilities\fR.
.TP
\fB1\fR
an option's value is invalid, a socket cannot be bound, the state cannot be
loaded, or a VM slot stops serving (one line on standard error says which).
.TP
\fB2\fR
the command line cannot be parsed (an unknown option, a missing value).
.TP
\fB74\fR
a write or sync of the durable state (\fB\-\-state\-dir\fR) failed
(\fBevent=state\-failure\fR; EX_IOERR): the daemon stops rather than answer
from state that is not on disk. A restart recovers from the last durable write.
.PP
Killed by SIGSYS: the seccomp filter caught a system call outside its
allow-list (see \fB\-\-seccomp\fR; the kernel logs it).
.SH EXAMPLES
One daemon for all VMs of the host, one socket per VM:
.PP
.nf
vhost\-user\-pasid \-\-vm web=/run/vhost\-user\-pasid/web.sock,quota=256 \e
    \-\-vm db=/run/vhost\-user\-pasid/db.sock \-\-reserve 1\-15 \e
    \-\-socket\-mode 660 \-\-socket\-group kvm
.fi
.PP
QEMU (10.2 or later) attaches a VM with shared memory:
.PP
.nf
\-object memory\-backend\-memfd,id=mem,size=1G,share=on \-numa node,memdev=mem
\-chardev socket,id=vpasid,path=/run/vhost\-user\-pasid/web.sock
\-device vhost\-user\-test\-device\-pci,chardev=vpasid,virtio\-id=37,num_vqs=1,config_size=32
.fi
.SH SEE ALSO
\fBpasidctl\fR(8), \fBqemu\-system\-x86_64\fR(1); docs/operations.md and
docs/protocol.md in the vpasid sources.
"#;

/// Sections the clap definitions cannot carry, in roff.
const CTL_EXTRA: &str = r#".SH ENVIRONMENT
.TP
\fBPASIDCTL_SOCKET\fR
Control socket of the daemon, as \fB\-\-socket\fR.
.SH EXIT STATUS
0 on success, and when standard output is closed early (a pipe into
\fBhead\fR); 1 when the daemon cannot be reached or refuses the command (one
line on standard error names the cause: no daemon listening on the socket,
permission denied, or no answer within 2 seconds); 2 for a bad command line.
.SH EXAMPLES
.nf
pasidctl vms                      # VM slots: state, held, quota, range
pasidctl pasids                   # PASIDs with holders and reference counts
pasidctl pasids \-\-vm web          # only those VM web holds
pasidctl metrics                  # Prometheus text format
pasidctl watch \-\-interval 1        # live view, Ctrl\-C to quit
pasidctl quota \-\-vm web 512
pasidctl release \-\-vm web         # refused while the VM is connected
.fi
.SH SEE ALSO
\fBvhost\-user\-pasid\fR(8); docs/operations.md in the vpasid sources.
"#;

/// Renders one page with clap's sections and `extra` before VERSION.
fn render_page(cmd: clap::Command, source: &str, extra: &str) -> io::Result<Vec<u8>> {
    let man = Man::new(cmd)
        .section(MAN_SECTION)
        .manual("vpasid")
        .source(source);
    let mut out = Vec::new();
    man.render(&mut out)?;
    if extra.is_empty() {
        return Ok(out);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let at = text.find("\n.SH VERSION").map_or(text.len(), |v| v + 1);
    let (head, tail) = text.split_at_checked(at).unwrap_or((&text, ""));
    let mut page = head.to_string();
    page.push_str(extra);
    page.push_str(tail);
    Ok(page.into_bytes())
}

/// A program's page plus one page per visible subcommand
/// (`pasidctl-watch.8`, ...), as `clap_mangen::generate_to` names them.
fn man_pages(cmd: clap::Command, extra: &str) -> io::Result<Vec<GeneratedFile>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    // Subcommand pages carry the program's name and version too.
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    let mut pages = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_display_name().unwrap_or(sub.get_name()).to_string();
        pages.push(GeneratedFile {
            path: PathBuf::from(format!("man/{name}.{MAN_SECTION}")),
            contents: render_page(sub.clone(), &source, "")?,
        });
    }
    pages.push(GeneratedFile {
        path: PathBuf::from(format!("man/{}.{MAN_SECTION}", cmd.get_name())),
        contents: render_page(cmd, &source, extra)?,
    });
    pages.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(pages)
}

/// `pasidctl`'s completion script for `shell` and where it is committed.
fn completion(shell: Shell) -> GeneratedFile {
    let mut cmd = Cli::command();
    let mut contents = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pasidctl", &mut contents);
    let file = match shell {
        Shell::Zsh => "_pasidctl".to_string(),
        other => format!("pasidctl.{other}"),
    };
    GeneratedFile {
        path: PathBuf::from("completions").join(file),
        contents,
    }
}

/// Every generated file: the man pages of both programs and `pasidctl`'s
/// bash, zsh and fish completions. (The daemon lives in libexec and is
/// started by systemd, so it gets no completions.)
pub fn generate() -> io::Result<Vec<GeneratedFile>> {
    let mut files = man_pages(Args::command(), DAEMON_EXTRA)?;
    files.extend(man_pages(Cli::command(), CTL_EXTRA)?);
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        files.push(completion(shell));
    }
    Ok(files)
}

/// Writes every generated file under `dir`; returns their paths.
pub fn write_to(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for f in generate()? {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.contents)?;
        written.push(path);
    }
    Ok(written)
}

/// The generated files whose copy under `dir` is missing or differs.
pub fn stale_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(generate()?
        .into_iter()
        .filter(|f| std::fs::read(dir.join(&f.path)).ok().as_deref() != Some(&f.contents[..]))
        .map(|f| f.path)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_both_programs_and_every_subcommand() {
        let files = generate().unwrap();
        let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
        for want in [
            "man/vhost-user-pasid.8",
            "man/pasidctl.8",
            "man/pasidctl-watch.8",
            "man/pasidctl-metrics.8",
            "completions/pasidctl.bash",
            "completions/_pasidctl",
            "completions/pasidctl.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let daemon = files
            .iter()
            .find(|f| f.path.ends_with("vhost-user-pasid.8"))
            .unwrap();
        let text = String::from_utf8(daemon.contents.clone()).unwrap();
        assert!(text.contains("\n.TH vhost-user-pasid 8 "), "{text}");
        let (before, after) = text.split_once(".SH SEE ALSO").unwrap();
        assert!(before.contains(".SH OPTIONS") && after.contains(".SH VERSION"));
        assert!(text.contains("socket\\-group"));
        assert!(text.contains(".SH ENVIRONMENT"));
        // Every exit status the daemon uses is listed.
        let statuses = text
            .split(".SH EXIT STATUS")
            .nth(1)
            .and_then(|t| t.split("\n.SH ").next())
            .unwrap();
        let state_io = vhost_user_pasid::state::EXIT_STATE_IO;
        for code in [0, 1, 2, state_io] {
            assert!(
                statuses.contains(&format!(".TP\n\\fB{code}\\fR\n")),
                "exit status {code} missing: {statuses}"
            );
        }
        assert!(text.contains("log\\-level"));
    }
}
