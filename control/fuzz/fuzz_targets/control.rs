//! The control protocol on arbitrary bytes: each line is decoded (an error names the
//! problem, never a panic) and every decoded request is applied to the model the daemon
//! applies it to (`daemon::model_step`), whose desired kernel state is then computed. A
//! refused request must leave the model unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntkplane::{
    daemon::{model_step, proto},
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

fuzz_target!(|data: &[u8]| {
    let mut s = system();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        if i >= 16 {
            break;
        }
        match proto::decode(line) {
            Err(e) => assert!(!e.is_empty()),
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
            }
        }
    }
});
