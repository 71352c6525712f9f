//! A daemon under test: `ntkplane run` in a namespace that plays the system, private run
//! and state directories, driven through the client; stopped (quit, then kill) on drop.
use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::lab::Ns;

/// The `ntkplane` binary built by the same `cargo test --workspace` (target/<profile>/).
/// Test executables live in `target/<profile>/deps/`, bench binaries in `target/<profile>/`.
pub fn bin() -> PathBuf {
    built("ntkplane")
}

/// The lab's binary (`lab/`), built beside the daemon.
pub fn lab_bin() -> PathBuf {
    built("ntkplane-lab")
}

/// A binary of the workspace, in the `target/<profile>/` this test binary runs from.
fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let p = if dir.ends_with("deps") {
        dir.parent().unwrap().join(name)
    } else {
        dir.join(name)
    };
    assert!(
        p.exists(),
        "{} missing: run `cargo xtask test` (or `cargo build --workspace`)",
        p.display()
    );
    p
}

/// The reference test daemon's options (β₁ `2.1.1.1`, one NIC `eth1`).
pub const REFERENCE: &[&str] = &[
    "--topology",
    "4.2.2.2",
    "--address",
    "2.1.1.1",
    "--interface",
    "eth1=169.254.96.141",
    "--serve-anonymous",
];

/// One daemon instance with private run/state directories; killed on drop.
pub struct Instance {
    pub name: String,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub netns: String,
    pub child: Option<Child>,
}

/// `--paths feed` unless the options choose: these tests give the daemon its paths with the
/// feed commands (`--paths protocol` is the daemon's default; tests/tests/protocol.rs asks
/// for it).
fn feed_unless_told(opts: &[&str]) -> &'static [&'static str] {
    if opts.contains(&"--paths") {
        &[]
    } else {
        &["--paths", "feed"]
    }
}

impl Instance {
    pub fn new(ns: &Ns) -> Instance {
        Self::named(ns, &format!("{}d", ns.name))
    }

    /// An instance called `name` whose system namespace is `ns`.
    pub fn named(ns: &Ns, name: &str) -> Instance {
        let name = name.to_string();
        let tmp = std::env::temp_dir();
        Instance {
            run_dir: tmp.join(format!("{name}-run")),
            state_dir: tmp.join(format!("{name}-state")),
            name,
            netns: ns.name.clone(),
            child: None,
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.args(["--instance", &self.name, "--run-dir"])
            .arg(&self.run_dir);
        c
    }

    /// Starts the reference test daemon (β₁ `2.1.1.1`, one NIC `eth1`).
    pub fn start(&mut self) {
        self.start_with(REFERENCE);
    }

    /// Starts `ntkplane run` with these options (plus namespace, state and rt_tables dirs).
    pub fn start_with(&mut self, opts: &[&str]) {
        self.spawn_with(opts);
        self.wait_up(Duration::from_secs(10));
    }

    /// Spawns `ntkplane run` without waiting for it to serve (several systems booting at
    /// once: spawn them all, then [`Instance::wait_up`] each).
    pub fn spawn_with(&mut self, opts: &[&str]) {
        let child = self
            .cmd()
            .args(["run", "--netns", &self.netns])
            .args(feed_unless_told(opts))
            .args(opts)
            .args(if opts.contains(&"--rt-tables-dir") {
                &[][..]
            } else {
                &["--rt-tables-dir", "none"][..]
            })
            .arg("--state-dir")
            .arg(&self.state_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Waits until the daemon answers `status`; panics after `within`.
    pub fn wait_up(&mut self, within: Duration) {
        let t0 = Instant::now();
        while self.client(&["status"]).0 != 0 {
            assert!(t0.elapsed() < within, "daemon did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ntkplane run` with the reference options (and `extra`) that is expected to exit on
    /// its own (a refused start): its exit code and stderr. Killed after 10 s.
    pub fn run_refused(&self, extra: &[&str]) -> (i32, String) {
        Self::refused(self.run_cmd(extra))
    }

    /// Runs `cmd` (a `run` expected to fail): its exit code and stderr. Killed after 10 s.
    pub fn refused(mut cmd: Command) -> (i32, String) {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (st.code().unwrap_or(-1), err);
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return (-1, "still running after 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `run` command line: the reference options, then `extra`.
    pub fn run_cmd(&self, extra: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["run", "--netns", &self.netns])
            .args(REFERENCE)
            .args(feed_unless_told(extra))
            .args(extra)
            .args(["--rt-tables-dir", "none"])
            .arg("--state-dir")
            .arg(&self.state_dir);
        c
    }

    pub fn client(&self, args: &[&str]) -> (i32, String, String) {
        let out: Output = self.cmd().args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.client(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join(&self.name).join("state.json")
    }

    pub fn pins(&self) -> PathBuf {
        PathBuf::from("/sys/fs/bpf/ntkplane").join(&self.name)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn wait_exit(&mut self) -> bool {
        if let Some(mut c) = self.child.take() {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(st)) = c.try_wait() {
                    return st.success();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
        }
        false
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.client(&["quit"]);
            self.kill9();
        }
        let _ = std::fs::remove_dir_all(self.pins());
        let _ = std::fs::remove_dir_all(&self.run_dir);
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

impl Instance {
    /// A command's JSON reply (`--json`); panics when the command fails.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// The kernel name of one of this daemon's identity namespaces (`migr01` → `<instance>-migr01`).
    pub fn identity_netns(&self, label: &str) -> String {
        format!("{}-{label}", self.name)
    }
}
