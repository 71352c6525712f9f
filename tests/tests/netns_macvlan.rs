//! Identity namespaces without `ip`: creation and deletion of named namespaces, and a
//! macvlan pseudo-interface created directly inside one (identities.md §3).
use ntkplane::{
    kernel::{in_netns, rtnl::Rtnl},
    netns::{Netns, NetnsError},
};
use ntkplane_integration::{
    lab::{require_root, veth, End, Ns, PREFIX},
    readback::links_in,
};

/// Deletes the namespace on drop (also when the test fails).
struct Created(String);
impl Drop for Created {
    fn drop(&mut self) {
        let _ = Netns::delete(&self.0);
    }
}

#[test]
fn create_use_and_delete_a_namespace_with_a_macvlan() {
    require_root();
    let system = Ns::new("sys");
    let peer = Ns::new("peer");
    veth(
        End(&system, "eth1", "00:16:3e:3c:14:33", "192.0.2.1/32"),
        End(&peer, "eth1", "02:00:00:00:00:02", "192.0.2.2/32"),
    );

    let name = format!("{PREFIX}{}migr02", std::process::id() % 100_000);
    let ns = Netns::create(&name).unwrap();
    let _guard = Created(name.clone());
    assert!(matches!(Netns::create(&name), Err(NetnsError::Exists(_))));
    assert!(matches!(Netns::create("a/b"), Err(NetnsError::BadName(_))));
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&name),
        "ip netns list does not show {name}"
    );

    // The pseudo-interface: created from the system's namespace, born inside the identity's.
    let target = ns.open().unwrap();
    in_netns(&system.netns(), |rt| {
        rt.block_on(async {
            let r = Rtnl::connect().await.unwrap();
            r.add_macvlan(
                "migr02_eth1",
                "eth1",
                Some("00:16:3E:3B:9F:45".parse().unwrap()),
                &target,
            )
            .await
            .unwrap();
        })
    })
    .unwrap();
    let links = in_netns(&ns, |rt| {
        rt.block_on(async { Rtnl::connect().await.unwrap().links().clone() })
    })
    .unwrap();
    let mv = links
        .get("migr02_eth1")
        .expect("macvlan inside the identity namespace");
    assert_eq!(mv.mac.unwrap().to_string(), "00:16:3E:3B:9F:45");
    assert!(
        !links_in(&system.name).contains_key("migr02_eth1"),
        "macvlan left in the system namespace"
    );
    assert_eq!(
        (mv.kind.as_deref(), mv.macvlan_mode.as_deref()),
        (Some("macvlan"), Some("vepa"))
    );

    Netns::delete(&name).unwrap();
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&name));
    assert!(matches!(
        Netns::delete(&name),
        Err(NetnsError::Delete { .. })
    ));
}
