// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest kernels, cached artefacts and the one-time set-up of a test process.
//!
//! Everything lives in the git-ignored `.cache/` at the repository root:
//! `qemu-root/` (a trixie chroot with QEMU >= 10.2), `kernels/<name>/`,
//! `build/<name>/` (the guest modules) and `initramfs/<name>.cpio.gz`.
//! [`ensure_setup`] runs the idempotent scripts that produce them, once per
//! process.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// A guest kernel the tests boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Debian 12 (bookworm) cloud kernel 6.1.
    V6_1,
    /// Debian 11 (bullseye) cloud kernel 5.10.
    V5_10,
}

impl Kernel {
    /// Every kernel, newest first.
    pub const ALL: [Kernel; 2] = [Kernel::V6_1, Kernel::V5_10];

    /// The cache name of the kernel: `6.1` or `5.10`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::V6_1 => "6.1",
            Kernel::V5_10 => "5.10",
        }
    }

    /// `.cache/kernels/<name>/`.
    pub fn dir(self) -> PathBuf {
        cache_dir().join("kernels").join(self.name())
    }

    /// The kernel image.
    pub fn vmlinuz(self) -> PathBuf {
        self.dir().join("vmlinuz")
    }

    /// The kernel's `uname -r`, read from `.cache/kernels/<name>/kver`.
    pub fn kver(self) -> Result<String> {
        let path = self.dir().join("kver");
        fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))
    }

    /// The initramfs built by `initramfs.sh` for this kernel.
    pub fn initramfs(self) -> PathBuf {
        cache_dir()
            .join("initramfs")
            .join(format!("{}.cpio.gz", self.name()))
    }

    /// `.cache/build/<name>/`, where `guest-driver/build.sh` puts the modules.
    pub fn module_build_dir(self) -> PathBuf {
        cache_dir().join("build").join(self.name())
    }

    /// Whether the guest module `name` (e.g. `ioasid_exerciser`) was built
    /// for this kernel, and so is in its initramfs.
    pub fn has_module(self, name: &str) -> bool {
        self.module_build_dir().join(format!("{name}.ko")).is_file()
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The git-ignored cache directory, `<repo>/.cache`.
pub fn cache_dir() -> PathBuf {
    repo_root().join(".cache")
}

/// The chroot holding QEMU, `<repo>/.cache/qemu-root`.
pub fn qemu_root() -> PathBuf {
    cache_dir().join("qemu-root")
}

/// Where console logs go: `$CARGO_TARGET_DIR/qemu-tests-logs`, by default
/// `<repo>/target/qemu-tests-logs`.
pub fn log_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                repo_root().join(p)
            }
        })
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("qemu-tests-logs")
}

/// How many bytes of a failed script's output go into the error.
const OUTPUT_TAIL: usize = 4000;

/// Runs `bash SCRIPT ARGS...` from the repository root, capturing output.
pub(crate) fn run_script(script: &Path, args: &[&str]) -> std::result::Result<(), String> {
    let shown = format!(
        "{} {}",
        script.strip_prefix(repo_root()).unwrap_or(script).display(),
        args.join(" ")
    );
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let tail_start = text
        .char_indices()
        .rev()
        .nth(OUTPUT_TAIL)
        .map_or(0, |(i, _)| i);
    Err(format!(
        "`{shown}` failed ({}); output tail:\n{}",
        out.status,
        &text[tail_start..]
    ))
}

/// The guest modules every kernel gets built.
const GUEST_MODULES: [&str; 2] = ["virtio_pasid", "ioasid_exerciser"];

/// Whether `kernel`'s built guest modules are newer than every file of
/// `guest-driver/` and the protocol header (`build.sh` always rebuilds; this
/// saves seconds per test process).
fn modules_up_to_date(kernel: Kernel) -> bool {
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(oldest_ko) = GUEST_MODULES
        .iter()
        .map(|m| mtime(&kernel.module_build_dir().join(format!("{m}.ko"))))
        .collect::<Option<Vec<_>>>()
        .and_then(|times| times.into_iter().min())
    else {
        return false;
    };
    let root = repo_root();
    let header = root.join("protocol/include/virtio_pasid.h");
    let Ok(sources) = fs::read_dir(root.join("guest-driver")) else {
        return false;
    };
    sources
        .map(|entry| entry.ok().map(|e| e.path()))
        .chain(std::iter::once(Some(header)))
        .all(|path| path.and_then(|p| mtime(&p)).is_some_and(|t| t <= oldest_ko))
}

/// All set-up steps, in order.
fn setup_all() -> std::result::Result<(), String> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the QEMU tests need root (mmdebstrap, chroot, mount namespaces)".into());
    }
    let root = repo_root();
    let setup = root.join("qemu-tests").join("setup");
    run_script(&setup.join("qemu.sh"), &[])?;
    run_script(&setup.join("kernels.sh"), &[])?;
    let build = root.join("guest-driver").join("build.sh");
    for kernel in Kernel::ALL {
        // The guest modules are optional until guest-driver/ ships its
        // build script; the initramfs then holds only the kernel's modules.
        if build.is_file() && !modules_up_to_date(kernel) {
            run_script(&build, &[kernel.name()])?;
        }
        run_script(&setup.join("initramfs.sh"), &[kernel.name()])?;
    }
    Ok(())
}

/// Builds, once per process, everything a guest needs: the QEMU chroot,
/// both guest kernels, the guest modules (when `guest-driver/build.sh`
/// exists) and both initramfs images. Later calls return the first result.
///
/// Needs root. The first run on a fresh machine downloads packages; later
/// runs only check the caches.
pub fn ensure_setup() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(setup_all).clone().map_err(Error::Setup)
}
