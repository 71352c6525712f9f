//! The listing format of scenarios.md's expected tables (one section per checkpoint):
//! `table N \`name\``, then `unreachable: …`, `blackhole: …`, `via GW dev D: .P/L [src .S], …`
//! and `either {via … | via …}: …` for equal-cost ties.
use std::{collections::BTreeMap, net::Ipv4Addr};

use crate::{addr::Ipv4Prefix, fwd::Route};

/// Every listing of `shared/spec/scenarios.md`, copied verbatim.
pub const SCENARIO_LISTINGS: &str = include_str!("scenario-listings.txt");

pub struct ExpectedTable {
    pub name: String,
    /// prefix → acceptable values (more than one for the spec's `either {…|…}` ties).
    pub routes: BTreeMap<Ipv4Prefix, Vec<Route>>,
}

fn short_ip(s: &str) -> Ipv4Addr {
    format!("10.0.0{s}").parse().unwrap()
}

/// `via 169.254.96.141 dev eth1` → (gw, dev)
fn parse_via(s: &str) -> (Ipv4Addr, String) {
    let w: Vec<&str> = s.split_whitespace().collect();
    assert_eq!((w[0], w[2]), ("via", "dev"), "bad via clause '{s}'");
    (w[1].parse().unwrap(), w[3].to_string())
}

/// The tables of section `== name` of a listings file (panics on a malformed listing: the
/// files are test data).
pub fn section(data: &str, name: &str) -> BTreeMap<u32, ExpectedTable> {
    let start = data
        .find(&format!("== {name}\n"))
        .unwrap_or_else(|| panic!("no section {name}"));
    let body = &data[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("=="))
        .collect::<Vec<_>>();
    let mut tables = BTreeMap::new();
    let mut current: Option<u32> = None;
    for line in body.iter().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("table ") {
            let id: u32 = rest.split_whitespace().next().unwrap().parse().unwrap();
            let name = rest.split('`').nth(1).unwrap().to_string();
            tables.insert(
                id,
                ExpectedTable {
                    name,
                    routes: BTreeMap::new(),
                },
            );
            current = Some(id);
            continue;
        }
        let (head, items) = line.trim().split_once(": ").expect("kind: items");
        let alternatives: Vec<(Ipv4Addr, String)> = if let Some(e) = head.strip_prefix("either {") {
            e.trim_end_matches('}')
                .split(" | ")
                .map(parse_via)
                .collect()
        } else if head.starts_with("via ") {
            vec![parse_via(head)]
        } else {
            vec![]
        };
        let table = tables
            .get_mut(&current.expect("route before table"))
            .unwrap();
        for item in items.split(", ") {
            let mut w = item.split_whitespace();
            let p: Ipv4Prefix = format!("10.0.0{}", w.next().unwrap()).parse().unwrap();
            let src = match (w.next(), w.next()) {
                (Some("src"), Some(s)) => Some(short_ip(s)),
                (None, None) => None,
                other => panic!("bad item '{item}': {other:?}"),
            };
            let values = match head {
                "unreachable" => vec![Route::Unreachable],
                "blackhole" => vec![Route::Blackhole],
                _ => alternatives
                    .iter()
                    .map(|(gw, dev)| Route::Via {
                        gw: *gw,
                        dev: dev.clone(),
                        src,
                    })
                    .collect(),
            };
            assert!(
                table.routes.insert(p, values).is_none(),
                "{name}: {p} listed twice"
            );
        }
    }
    tables
}
