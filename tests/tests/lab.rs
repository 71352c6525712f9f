//! The lab runner as a user meets it: `ntkplane-lab run FILE`. A scenario with an unknown
//! system, a bad address or a malformed MAC is refused with the file, line and field named,
//! before anything is created; the quickstart runs its checks with real packets and leaves
//! nothing behind — reading the kernel itself: with `bpftool` and `ping` failing and the
//! table ids 240–251 named in `/etc/iproute2/rt_tables.d` (so `ip` would print names).
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use ntkplane_integration::{daemon::lab_bin, lab::require_root};

const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/quickstart.toml");

fn lab_state() -> Vec<String> {
    ntkplane_lab::runner::lab_leftovers()
}

fn lab_run(file: &Path) -> (i32, String, String) {
    lab_run_with(file, &[])
}

fn lab_run_with(file: &Path, env: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(lab_bin())
        .arg("run")
        .arg(file)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One test: the checks compare the host's lab state before and after, so nothing else of
/// the lab may run at the same time.
#[test]
fn bad_scenarios_are_refused_then_the_quickstart_passes_and_leaves_nothing() {
    require_root();
    bad_scenarios_are_refused_with_the_field_named_and_nothing_created();
    quickstart_passes_and_leaves_nothing();
}

fn bad_scenarios_are_refused_with_the_field_named_and_nothing_created() {
    let good = std::fs::read_to_string(QUICKSTART).unwrap();
    let dir = std::env::temp_dir().join(format!("ntkt-labfiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (tag, from, to, want) in [
        (
            "unknown-system",
            "on = \"beta\"",
            "on = \"omega\"",
            "step[1].on: unknown system 'omega'",
        ),
        (
            "bad-address",
            "address = \"2.0.1.1\"",
            "address = \"2.0.7.1\"",
            "system[1].address: bad address '2.0.7.1'",
        ),
        (
            "malformed-mac",
            "mac = \"00:16:3E:FD:E2:AA\"",
            "mac = \"00:16:3E:FD:E2\"",
            "system[0].mac: malformed MAC '00:16:3E:FD:E2'",
        ),
    ] {
        assert!(good.contains(from), "{tag}: fixture changed");
        let f = dir.join(format!("{tag}.toml"));
        std::fs::write(&f, good.replacen(from, to, 1)).unwrap();
        let before = lab_state();
        let (code, _, err) = lab_run(&f);
        assert_ne!(code, 0, "{tag} was accepted");
        assert!(
            err.contains(&format!("{}:", f.display())) && err.contains(want),
            "{tag}: '{err}' does not name '{want}' with the file and line"
        );
        let at = format!("{}:", f.display());
        let line: usize = err
            .split_once(&at)
            .and_then(|(_, r)| r.split(':').next())
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            good.replacen(from, to, 1)
                .lines()
                .nth(line.saturating_sub(1))
                .unwrap_or("")
                .contains(to.split(" = ").nth(1).unwrap()),
            "{tag}: line {line} is not the faulty one: {err}"
        );
        assert_eq!(lab_state(), before, "{tag}: something was created");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directory of failing stand-ins for tools the lab must not need, removed on drop.
struct FailingTools(PathBuf);

impl FailingTools {
    fn new(names: &[&str]) -> FailingTools {
        let dir = std::env::temp_dir().join(format!("ntkt-failing-tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tools = FailingTools(dir);
        for n in names {
            let p = tools.0.join(n);
            std::fs::write(
                &p,
                "#!/bin/sh\necho \"$0: not to be used by the lab\" >&2\nexit 1\n",
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        tools
    }

    /// `PATH` with the stand-ins first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.0.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

impl Drop for FailingTools {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A foreign `rt_tables.d` file naming the table ids ntkplane uses (240–251): `ip` prints
/// these names instead of the numbers. Removed on drop (also when the test fails), with the
/// directory if this created it.
struct ForeignTableNames {
    file: PathBuf,
    made_dir: Option<PathBuf>,
}

impl ForeignTableNames {
    fn install() -> ForeignTableNames {
        let dir = Path::new("/etc/iproute2/rt_tables.d");
        let made_dir = (!dir.exists()).then(|| dir.to_path_buf());
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join(format!("ntkt-foreign-{}.conf", std::process::id()));
        let guard = ForeignTableNames { file, made_dir };
        let text: String = (240..=251).map(|t| format!("{t} foreign{t}\n")).collect();
        std::fs::write(&guard.file, text).unwrap();
        guard
    }
}

impl Drop for ForeignTableNames {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        if let Some(d) = &self.made_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn quickstart_passes_and_leaves_nothing() {
    let before = lab_state();
    let tools = FailingTools::new(&["bpftool", "ping"]);
    let _names = ForeignTableNames::install();
    let (code, out, err) = lab_run_with(Path::new(QUICKSTART), &[("PATH", tools.path())]);
    assert_eq!(code, 0, "quickstart failed:\n{out}\n{err}");
    assert!(
        out.contains("checks: 5 passed, 0 failed (2 exact)"),
        "{out}"
    );
    assert!(
        out.contains("connectivity"),
        "no matrix in the report: {out}"
    );
    assert_eq!(lab_state(), before, "the lab left something");
}
