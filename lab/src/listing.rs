//! The listing format of scenarios.md's expected tables (one section per checkpoint):
//! `table N \`name\``, then `unreachable: …`, `blackhole: …`, `via GW dev D: .P/L [src .S], …`
//! and `either {via … | via …}: …` for equal-cost ties.
use std::{collections::BTreeMap, net::Ipv4Addr};

use ntkplane::{addr::Ipv4Prefix, fwd::Route};

/// Every listing of `shared/spec/scenarios.md`, copied verbatim.
pub const SCENARIO_LISTINGS: &str = include_str!("scenario-listings.txt");

pub struct ExpectedTable {
    pub name: String,
    /// prefix → acceptable values (more than one for the spec's `either {…|…}` ties).
    pub routes: BTreeMap<Ipv4Prefix, Vec<Route>>,
}

fn short_ip(s: &str) -> Result<Ipv4Addr, String> {
    format!("10.0.0{s}")
        .parse()
        .map_err(|_| format!("bad address '{s}' (expected .N)"))
}

/// `via 169.254.96.141 dev eth1` → (gw, dev)
fn parse_via(s: &str) -> Result<(Ipv4Addr, String), String> {
    match s.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["via", gw, "dev", dev] => Ok((
            gw.parse().map_err(|_| format!("bad gateway in '{s}'"))?,
            dev.to_string(),
        )),
        _ => Err(format!("bad via clause '{s}'")),
    }
}

/// The tables of section `== name` of a listings file (panics on a malformed listing: the
/// files are test data).
pub fn section(data: &str, name: &str) -> BTreeMap<u32, ExpectedTable> {
    let start = data
        .find(&format!("== {name}\n"))
        .unwrap_or_else(|| panic!("no section {name}"));
    let body = data[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("=="))
        .collect::<Vec<_>>()
        .join("\n");
    parse_tables(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Tables in the listing format (as in a scenario file's `tables = """…"""`).
pub fn parse_tables(text: &str) -> Result<BTreeMap<u32, ExpectedTable>, String> {
    let mut tables = BTreeMap::new();
    let mut current: Option<u32> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("table ") {
            let id: u32 = rest
                .split_whitespace()
                .next()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("bad table line '{line}'"))?;
            let name = rest.split('`').nth(1).unwrap_or("").to_string();
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
        let (head, items) = line
            .split_once(": ")
            .ok_or_else(|| format!("expected 'kind: items' in '{line}'"))?;
        let alternatives: Vec<(Ipv4Addr, String)> = if let Some(e) = head.strip_prefix("either {") {
            e.trim_end_matches('}')
                .split(" | ")
                .map(parse_via)
                .collect::<Result<_, _>>()?
        } else if head.starts_with("via ") {
            vec![parse_via(head)?]
        } else if head == "unreachable" || head == "blackhole" {
            vec![]
        } else {
            return Err(format!("unknown route kind '{head}'"));
        };
        let id = current.ok_or_else(|| format!("route before any table: '{line}'"))?;
        let table = tables.get_mut(&id).unwrap();
        for item in items.split(", ") {
            let mut w = item.split_whitespace();
            let p: Ipv4Prefix = format!("10.0.0{}", w.next().unwrap_or(""))
                .parse()
                .map_err(|_| format!("bad prefix in '{item}'"))?;
            let src = match (w.next(), w.next()) {
                (Some("src"), Some(s)) => Some(short_ip(s)?),
                (None, None) => None,
                _ => return Err(format!("bad item '{item}'")),
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
            if table.routes.insert(p, values).is_some() {
                return Err(format!("table {id}: {p} listed twice"));
            }
        }
    }
    Ok(tables)
}

/// Whether a listings file has section `== name`.
pub fn has_section(data: &str, name: &str) -> bool {
    data.contains(&format!("== {name}\n"))
}
