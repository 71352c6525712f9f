//! The control protocol on arbitrary bytes: each line is decoded (an error names the
//! problem, never a panic); every decoded request is applied to the model alone
//! (`daemon::model_step`, whose desired kernel state is then computed) and through the
//! daemon's `handle` over the in-memory dataplane (`FakeDataplane`): ordering, reverts and
//! replies, with no kernel. The state is persisted under /dev/shm.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntkplane::{
    daemon::{dataplane::FakeDataplane, model_step, proto, Daemon, Paths},
    system::{Config, Nic, System},
};

fn system() -> System {
    System::init(
        Config {
            topology: "4.2.2.2".into(),
            base: "10.0.0.0/8".parse().unwrap(),
            subnet_level: 0,
            serve_anonymous: true,
            anonymizer: true,
            mark_mask: u32::MAX,
            nics: vec![Nic {
                name: "eth1".into(),
                mac: "00:16:3E:EC:A3:E1".parse().unwrap(),
                linklocal: "169.254.96.141".parse().unwrap(),
            }],
        },
        "2.1.1.1",
    )
    .unwrap()
}

fn paths() -> Paths {
    let dir = std::path::PathBuf::from(format!("/dev/shm/ntkplane-fuzz-{}", std::process::id()));
    Paths {
        instance: "fuzz".into(),
        state_dir: dir.join("state"),
        run_dir: dir.join("run"),
        pin_root: dir.join("pins"),
        rt_tables_dir: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut s = system();
    let mut d = Daemon::over(paths(), system(), Box::new(FakeDataplane::default()));
    d.converge().unwrap();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        if i >= 16 {
            break;
        }
        match proto::decode(line) {
            Err(e) => assert!(!e.is_empty()),
            Ok(proto::Request::Quit {}) => {}
            Ok(req) => {
                let mut next = s.clone();
                match model_step(&s, &mut next, &req, 1_000 * i as u64) {
                    Some(Ok(_)) => {
                        if next.desired().is_ok() {
                            s = next;
                        }
                    }
                    Some(Err(e)) => assert!(!e.to_string().is_empty()),
                    None => {}
                }
                let r = d.handle(&req);
                assert!(r.ok || r.error.as_deref().is_some_and(|e| !e.is_empty()));
                serde_json::to_string(&r).unwrap();
            }
        }
    }
});
