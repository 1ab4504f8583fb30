//! systemd/install.sh and systemd/uninstall.sh, run into a staging
//! directory (DESTDIR) as a packager would: what lands where, what a
//! second run keeps, and what uninstalling leaves behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::BIN;

const SYSTEMD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd");

/// Runs `systemd/SCRIPT args` with `DESTDIR=root`; returns its stdout.
fn script(name: &str, root: &Path, args: &[&str]) -> String {
    let out = Command::new(Path::new(SYSTEMD).join(name))
        .args(args)
        .env("DESTDIR", root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Whether two files hold the same bytes, read a chunk at a time (the
/// debug binary is large, and other tests in this process watch its peak
/// memory).
fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

#[test]
fn install_puts_binary_unit_and_config_in_place_and_uninstall_keeps_config_and_store() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let binary = root.join("usr/local/bin/feedmerge");
    let unit = root.join("etc/systemd/system/feedmerge.service");
    let config = root.join("etc/feedmerge/feedmerge.toml");

    script("install.sh", root, &["--bin", BIN]);
    assert_eq!(mode(&binary), 0o755);
    assert!(
        same_bytes(&binary, Path::new(BIN)),
        "{} differs",
        binary.display()
    );
    assert_eq!(mode(&unit), 0o644);
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        unit_text.contains(
            "\nExecStart=/usr/local/bin/feedmerge run --config /etc/feedmerge/feedmerge.toml\n"
        ),
        "{unit_text}"
    );
    assert_eq!(mode(&config), 0o644);
    // The installed config is valid, and its store is the unit's
    // StateDirectory, the one place the daemon may write.
    let checked = Command::new(BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let parsed = feedmerge::config::load(&config).unwrap();
    assert_eq!(parsed.storage.path, Path::new("/var/lib/feedmerge"));
    assert!(unit_text.contains("\nStateDirectory=feedmerge\n"));

    // Again, after the operator edited the config: it is kept.
    std::fs::write(&config, "# mine\n").unwrap();
    let again = script("install.sh", root, &["--bin", BIN]);
    assert!(again.contains("kept"), "{again}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");

    // Another prefix: the unit starts the binary installed there.
    script("install.sh", root, &["--bin", BIN, "--prefix", "/opt/fm"]);
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        unit_text.contains("\nExecStart=/opt/fm/bin/feedmerge run "),
        "{unit_text}"
    );

    // Uninstalling finds that binary from the unit; config and store stay.
    let store = root.join("var/lib/feedmerge");
    std::fs::create_dir_all(&store).unwrap();
    script("uninstall.sh", root, &[]);
    assert!(!root.join("opt/fm/bin/feedmerge").exists());
    assert!(!unit.exists());
    assert!(config.exists() && store.exists());
    // What is left of the first install; a second run is no error.
    script("uninstall.sh", root, &[]);
    assert!(!binary.exists());
    script("uninstall.sh", root, &[]);

    script("uninstall.sh", root, &["--purge"]);
    assert!(!root.join("etc/feedmerge").exists());
    assert!(!store.exists());
}

#[test]
fn install_refuses_a_missing_binary() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(Path::new(SYSTEMD).join("install.sh"))
        .args(["--bin", "/nonexistent/feedmerge"])
        .env("DESTDIR", root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cargo install --path ."));
    assert!(std::fs::read_dir(root.path()).unwrap().next().is_none());
}
