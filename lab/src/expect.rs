//! The exact forms of a kernel check (`docs/LAB.md`): the text a scenario writes for an
//! address, a rule, a route of table `main` or a NAT rule, parsed into the values the kernel
//! reports (the rtnetlink entries of [`ntkplane::kernel::rtnl`]), so that two spellings of
//! the same object compare equal whatever their field order, and shown back in one canonical
//! spelling. Used by the scenario parser (validation at load) and the runner (comparison).
use std::{collections::BTreeSet, net::Ipv4Addr};

use serde::Deserialize;

use ntkplane::{
    addr::Ipv4Prefix,
    kernel::rtnl::{RouteEntry, RuleEntry},
    plan::MAIN_TABLE,
};

use crate::readback;

/// An address as a check writes it: `10.0.0.18/32`, or `10.0.0.18` (a /32).
pub fn parse_address(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a
        .trim()
        .parse()
        .map_err(|_| format!("bad address '{s}' (expected A.B.C.D[/LEN])"))?;
    let len: u8 = l
        .trim()
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("bad prefix length in '{s}'"))?;
    Ok((addr, len))
}

/// `A.B.C.D[/LEN]` as (address, length), host bits allowed (a rule's `from`).
fn parse_net(s: &str) -> Result<(Ipv4Addr, u8), String> {
    parse_address(s)
}

fn parse_num(s: &str, what: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("bad {what} '{s}'"))
}

/// A table as rules and routes name it: a number, or `local`, `main`, `default`.
fn parse_table(s: &str) -> Result<u32, String> {
    match s {
        "local" => Ok(255),
        "main" => Ok(254),
        "default" => Ok(253),
        n => n
            .parse()
            .map_err(|_| format!("bad table '{n}' (a number, local, main or default)")),
    }
}

/// One entry of `rules = [...]`: a rule, or (an inner array) rules in any order among
/// themselves — e.g. the fwmark rules, which share one priority and are mutually exclusive.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RuleItem {
    One(String),
    AnyOrder(Vec<String>),
}

impl RuleItem {
    pub fn texts(&self) -> Vec<&String> {
        match self {
            RuleItem::One(s) => vec![s],
            RuleItem::AnyOrder(v) => v.iter().collect(),
        }
    }
}

/// A rule without what the exact form does not compare (priority, protocol).
fn rule_key(r: &RuleEntry) -> RuleEntry {
    RuleEntry {
        priority: 0,
        protocol: 0,
        // A rule whose action is not a lookup reports table 0.
        table: if r.action == 1 { r.table } else { 0 },
        ..r.clone()
    }
}

/// A rule as a check writes it, iproute2's words without the priority: `local`, `main`,
/// `default` (the kernel's own rules), `fwmark 250 lookup 250`, `lookup 251`,
/// `from 10.0.0.0/24 lookup 7`, `not to 1.2.3.4 unreachable`. `from all` may be written;
/// marks in decimal or hex; `table` is a synonym of `lookup`.
pub fn parse_rule(text: &str) -> Result<RuleEntry, String> {
    let mut r = RuleEntry {
        priority: 0,
        table: 0,
        action: 1,
        protocol: 0,
        invert: false,
        src: None,
        dst: None,
        tos: 0,
        fwmark: None,
        iif: None,
        oif: None,
        goto: None,
        suppress_prefixlen: None,
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    if let [one] = words.as_slice() {
        if let Ok(t @ 253..=255) = parse_table(one) {
            r.table = t;
            return Ok(r);
        }
    }
    let mut w = words.iter().copied();
    let mut action = false;
    while let Some(k) = w.next() {
        let mut arg = |what: &str| {
            w.next()
                .ok_or_else(|| format!("'{text}': {what} needs a value"))
        };
        match k {
            "not" => r.invert = true,
            "from" => {
                let v = arg("from")?;
                if v != "all" {
                    r.src = Some(parse_net(v)?);
                }
            }
            "to" => {
                let v = arg("to")?;
                if v != "all" {
                    r.dst = Some(parse_net(v)?);
                }
            }
            "tos" => r.tos = parse_num(arg("tos")?, "tos")? as u8,
            "fwmark" => {
                let v = arg("fwmark")?;
                let (m, mask) = v.split_once('/').unwrap_or((v, "0xffffffff"));
                r.fwmark = Some((parse_num(m, "fwmark")?, parse_num(mask, "mask")?));
            }
            "iif" | "iifname" => r.iif = Some(arg("iif")?.to_string()),
            "oif" | "oifname" => r.oif = Some(arg("oif")?.to_string()),
            "lookup" | "table" => r.table = parse_table(arg("lookup")?)?,
            "suppress_prefixlength" => {
                r.suppress_prefixlen = Some(parse_num(arg(k)?, "prefix length")?)
            }
            "goto" => {
                r.action = 2;
                r.goto = Some(parse_num(arg("goto")?, "goto target")?);
                action = true;
            }
            "nop" => (r.action, action) = (3, true),
            "blackhole" => (r.action, action) = (6, true),
            "unreachable" => (r.action, action) = (7, true),
            "prohibit" => (r.action, action) = (8, true),
            "pref" | "priority" | "preference" | "proto" | "protocol" => {
                return Err(format!(
                    "'{text}': {k} is not compared (rules are compared by their order)"
                ))
            }
            _ => return Err(format!("'{text}': unknown word '{k}'")),
        }
    }
    if action && r.table != 0 {
        return Err(format!("'{text}': both a lookup and another action"));
    }
    if !action && r.table == 0 {
        return Err(format!(
            "'{text}': no lookup (e.g. 'lookup 251') nor action"
        ));
    }
    Ok(r)
}

/// A rule in the canonical spelling of [`parse_rule`] (what failures show).
pub fn rule_text(r: &RuleEntry) -> String {
    let r = rule_key(r);
    let net = |(a, l): (Ipv4Addr, u8)| {
        if l == 32 {
            a.to_string()
        } else {
            format!("{a}/{l}")
        }
    };
    let mut w: Vec<String> = Vec::new();
    if r.invert {
        w.push("not".into());
    }
    if let Some(s) = r.src {
        w.push(format!("from {}", net(s)));
    }
    if let Some(d) = r.dst {
        w.push(format!("to {}", net(d)));
    }
    if r.tos != 0 {
        w.push(format!("tos {:#x}", r.tos));
    }
    if let Some((m, mask)) = r.fwmark {
        w.push(if mask == u32::MAX {
            format!("fwmark {m}")
        } else {
            format!("fwmark {m}/{mask:#x}")
        });
    }
    if let Some(i) = &r.iif {
        w.push(format!("iif {i}"));
    }
    if let Some(o) = &r.oif {
        w.push(format!("oif {o}"));
    }
    if w.is_empty() && r.action == 1 && r.suppress_prefixlen.is_none() {
        match r.table {
            255 => return "local".into(),
            254 => return "main".into(),
            253 => return "default".into(),
            _ => {}
        }
    }
    match r.action {
        1 => w.push(format!("lookup {}", r.table)),
        2 => w.push(format!("goto {}", r.goto.unwrap_or(0))),
        3 => w.push("nop".into()),
        6 => w.push("blackhole".into()),
        7 => w.push("unreachable".into()),
        8 => w.push("prohibit".into()),
        a => w.push(format!("action {a}")),
    }
    if let Some(l) = r.suppress_prefixlen {
        w.push(format!("suppress_prefixlength {l}"));
    }
    w.join(" ")
}

/// Whether a kernel rule is the one an expected rule describes (priority and protocol
/// aside).
pub fn same_rule(got: &RuleEntry, want: &RuleEntry) -> bool {
    rule_key(got) == rule_key(want)
}

/// The rtm_flags iproute2 shows (and a route line can state).
const ROUTE_FLAGS: [(u32, &str); 7] = [
    (0x1, "dead"),
    (0x4, "onlink"),
    (0x2, "pervasive"),
    (0x8, "offload"),
    (0x40, "trap"),
    (0x10, "linkdown"),
    (0x20, "unresolved"),
];

/// A route without what a route line cannot state.
pub fn route_key(r: &RouteEntry) -> RouteEntry {
    let shown: u32 = ROUTE_FLAGS.iter().map(|(b, _)| b).sum();
    RouteEntry {
        flags: r.flags & shown,
        ..r.clone()
    }
}

/// A route of table `table` as `ip route show table N` prints it, its fields in any order:
/// `[TYPE] DST [from P] [tos T] [via GW] [dev D] [proto P] [scope S] [src A] [metric M]
/// [FLAG…]`. What the line leaves out takes iproute2's defaults (type unicast, protocol
/// boot, scope global), as `ip route show` leaves them out.
pub fn parse_route(text: &str, table: u32) -> Result<RouteEntry, String> {
    let mut w = text.split_whitespace().peekable();
    let mut kind = 1u8;
    if let Some(first) = w.peek() {
        if let Some(k) = (0u8..=11).find(|k| readback::route_type(*k) == *first) {
            kind = k;
            w.next();
        }
    }
    let dst = w.next().ok_or("empty route line")?;
    let dst: Ipv4Prefix = if dst == "default" {
        "0.0.0.0/0".parse().unwrap()
    } else {
        let (a, l) = parse_address(dst)?;
        Ipv4Prefix::new(a, l).map_err(|e| format!("'{text}': {e}"))?
    };
    let mut r = RouteEntry {
        table,
        dst,
        kind,
        protocol: 3,
        scope: 0,
        tos: 0,
        flags: 0,
        src: None,
        gateway: None,
        dev: None,
        prefsrc: None,
        metric: None,
    };
    while let Some(k) = w.next() {
        if let Some((bit, _)) = ROUTE_FLAGS.iter().find(|(_, n)| *n == k) {
            r.flags |= bit;
            continue;
        }
        let v = w
            .next()
            .ok_or_else(|| format!("'{text}': {k} needs a value"))?;
        let ip = |v: &str| {
            v.parse::<Ipv4Addr>()
                .map_err(|_| format!("'{text}': bad address '{v}'"))
        };
        match k {
            "via" => r.gateway = Some(ip(v)?),
            "dev" => r.dev = Some(v.to_string()),
            "src" => r.prefsrc = Some(ip(v)?),
            "from" => r.src = Some(parse_net(v)?),
            "tos" => r.tos = parse_num(v, "tos")? as u8,
            "metric" | "priority" | "preference" => r.metric = Some(parse_num(v, "metric")?),
            "proto" | "protocol" => {
                r.protocol = (0u8..=255)
                    .find(|p| readback::protocol(*p) == v)
                    .ok_or_else(|| format!("'{text}': unknown protocol '{v}'"))?
            }
            "scope" => {
                r.scope = (0u8..=255)
                    .find(|s| readback::scope(*s) == v)
                    .ok_or_else(|| format!("'{text}': unknown scope '{v}'"))?
            }
            "table" => {
                if parse_table(v)? != table {
                    return Err(format!("'{text}': not a route of table {table}"));
                }
            }
            _ => return Err(format!("'{text}': unknown word '{k}'")),
        }
    }
    Ok(r)
}

/// The routes of a listing, one per line (blank lines skipped).
pub fn parse_routes(text: &str, table: u32) -> Result<Vec<RouteEntry>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| parse_route(l, table))
        .collect()
}

/// A route in the canonical spelling (`ip route show table N`).
pub fn route_text(r: &RouteEntry) -> String {
    readback::render_route(r, false)
}

/// Table main's routes of a listing, as `ip route show` prints them.
pub fn parse_main(text: &str) -> Result<Vec<RouteEntry>, String> {
    parse_routes(text, MAIN_TABLE)
}

/// A NAT rule's text, normalized: whitespace collapsed, the elements of every `{ … }` list
/// in address order (nft prints them so; a check may write them in any order).
pub fn normalize_nat(s: &str) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::new();
    let mut rest = flat.as_str();
    while let Some(open) = rest.find("{ ") {
        let Some(close) = rest[open + 2..].find(" }").map(|c| c + open + 2) else {
            break;
        };
        out.push_str(&rest[..open + 2]);
        let mut items: Vec<&str> = rest[open + 2..close]
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .collect();
        items.sort_by_key(|x| (element_key(x), x.to_string()));
        out.push_str(&items.join(", "));
        out.push_str(" }");
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    out
}

/// Sort key of a set or map element: its first address.
fn element_key(e: &str) -> u32 {
    let a = e.split(['/', ' ', ':']).next().unwrap_or("");
    a.parse::<Ipv4Addr>().map_or(u32::MAX, u32::from)
}

/// The NAT rules of an `nft list ruleset` listing, in its order: every rule of a chain of
/// type nat (and any rule with a NAT statement elsewhere), with the elements of the named
/// maps and sets it uses written in place (`map @pre0` → `map { 10.0.0.22/31 : …, … }`),
/// normalized by [`normalize_nat`].
pub fn nat_rules(ruleset: &str) -> Vec<String> {
    // Join the lines of a statement whose braces span several lines (elements lists).
    let mut lines: Vec<String> = Vec::new();
    let mut pending = String::new();
    for l in ruleset.lines() {
        let l = l.trim();
        if !pending.is_empty() {
            pending.push(' ');
        }
        pending.push_str(l);
        let open = pending.matches('{').count();
        let close = pending.matches('}').count();
        let header = pending.ends_with('{')
            && ["table ", "chain ", "map ", "set ", "flowtable "]
                .iter()
                .any(|h| pending.starts_with(h));
        if open <= close || header {
            lines.push(std::mem::take(&mut pending));
        }
    }
    if !pending.is_empty() {
        lines.push(pending);
    }
    // Named sets and maps: (table, name) → "{ elements }".
    let mut named: Vec<((String, String), String)> = Vec::new();
    let mut table = String::new();
    let mut block: Option<(String, String)> = None; // (kind, name)
    let mut nat_chain = false;
    let mut rules = Vec::new();
    for l in &lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["table", .., name, "{"] => table = name.to_string(),
            [kind @ ("chain" | "map" | "set"), name, "{"] => {
                block = Some((kind.to_string(), name.to_string()));
                nat_chain = false;
            }
            ["}"] => {
                if block.take().is_none() {
                    table.clear();
                }
            }
            _ => match &block {
                Some((k, name)) if k == "map" || k == "set" => {
                    if let Some(e) = l.strip_prefix("elements = ") {
                        named.push(((table.clone(), name.clone()), e.trim().to_string()));
                    }
                }
                Some((k, _)) if k == "chain" => {
                    if l.starts_with("type ") {
                        nat_chain = l.starts_with("type nat ");
                    } else if !l.is_empty()
                        && (nat_chain
                            || ["snat", "dnat", "masquerade", "redirect"]
                                .iter()
                                .any(|s| w.contains(s)))
                    {
                        let mut rule = l.to_string();
                        for ((t, n), e) in &named {
                            if *t == table {
                                rule = replace_ref(&rule, n, e);
                            }
                        }
                        rules.push(normalize_nat(&rule));
                    }
                }
                _ => {}
            },
        }
    }
    rules
}

/// `rule` with the reference `@name` (a whole word) replaced by `with`.
fn replace_ref(rule: &str, name: &str, with: &str) -> String {
    rule.split(' ')
        .map(|w| {
            if w.strip_prefix('@') == Some(name) {
                with.to_string()
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The difference of two sets as `missing […]; unexpected […]`.
pub fn set_diff(got: &BTreeSet<String>, want: &BTreeSet<String>) -> String {
    let missing: Vec<&String> = want.difference(got).collect();
    let extra: Vec<&String> = got.difference(want).collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing {}", list(missing)));
    }
    if !extra.is_empty() {
        parts.push(format!("unexpected {}", list(extra)));
    }
    parts.join("; ")
}

/// `[a, b, c]`.
pub fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    format!(
        "[{}]",
        items
            .into_iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_rule(priority: u32, table: u32, fwmark: Option<u32>, protocol: u8) -> RuleEntry {
        RuleEntry {
            priority,
            table,
            action: 1,
            protocol,
            invert: false,
            src: None,
            dst: None,
            tos: 0,
            fwmark: fwmark.map(|m| (m, u32::MAX)),
            iif: None,
            oif: None,
            goto: None,
            suppress_prefixlen: None,
        }
    }

    #[test]
    fn rules_compare_without_priority_or_protocol() {
        let k = kernel_rule(32764, 250, Some(250), 15);
        for text in [
            "fwmark 250 lookup 250",
            "from all fwmark 0xfa lookup 250",
            "fwmark 0xfa/0xffffffff table 250",
        ] {
            assert!(same_rule(&k, &parse_rule(text).unwrap()), "{text}");
        }
        assert!(!same_rule(
            &k,
            &parse_rule("fwmark 249 lookup 249").unwrap()
        ));
        assert_eq!(rule_text(&k), "fwmark 250 lookup 250");
        let local = kernel_rule(0, 255, None, 2);
        assert!(same_rule(&local, &parse_rule("local").unwrap()));
        assert!(same_rule(&local, &parse_rule("lookup local").unwrap()));
        assert_eq!(rule_text(&local), "local");
        assert_eq!(rule_text(&kernel_rule(32765, 251, None, 15)), "lookup 251");
        assert_eq!(
            rule_text(&parse_rule("not from 10.0.0.0/24 to 1.2.3.4 unreachable").unwrap()),
            "not from 10.0.0.0/24 to 1.2.3.4 unreachable"
        );
        for bad in [
            "pref 32765 lookup 251",
            "fwmark 250",
            "lookup",
            "fwmark x lookup 3",
            "lookup 251 proto ntk",
            "frm all lookup 3",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_compare_whatever_the_field_order() {
        let a = parse_route(
            "169.254.96.141 dev eth1 proto ntk scope link src 169.254.69.30",
            254,
        )
        .unwrap();
        let b = parse_route(
            "169.254.96.141/32 src 169.254.69.30 scope link proto ntk dev eth1",
            254,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            route_text(&a),
            "169.254.96.141 dev eth1 proto ntk scope link src 169.254.69.30"
        );
        // Defaults: proto boot, scope global, unicast.
        let c = parse_route("10.0.0.41 via 169.254.110.188 dev eth1", 251).unwrap();
        assert_eq!((c.protocol, c.scope, c.kind, c.table), (3, 0, 1, 251));
        let u = parse_route("unreachable 10.0.0.0/29 proto ntk", 251).unwrap();
        assert_eq!(u.kind, 7);
        assert_eq!(route_text(&u), "unreachable 10.0.0.0/29 proto ntk");
        assert!(parse_route("10.0.0.1 dev", 254).is_err());
        assert!(parse_route("10.0.0.1 gateway 1.2.3.4", 254).is_err());
        assert!(
            parse_route("10.0.0.1/24 dev eth1", 254).is_err(),
            "host bits"
        );
        assert!(parse_route("10.0.0.1 dev eth1 table 251", 254).is_err());
        assert!(parse_route("10.0.0.1 dev eth1 table main", 254).is_ok());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("10.0.0.18").unwrap(),
            ("10.0.0.18".parse().unwrap(), 32)
        );
        assert_eq!(
            parse_address("127.0.0.1/8").unwrap(),
            ("127.0.0.1".parse().unwrap(), 8)
        );
        assert!(parse_address("10.0.0.300").is_err());
        assert!(parse_address("10.0.0.1/33").is_err());
    }

    const LAMBDA: &str = "table ip ntkplane {
\tmap pre0 {
\t\ttype ipv4_addr : interval ipv4_addr
\t\tflags interval
\t\telements = { 10.0.0.22/31 : 10.0.0.40/31, 10.0.0.50/31 : 10.0.0.40/31,
\t\t\t     10.0.0.62/31 : 10.0.0.40/31, 10.0.0.86/31 : 10.0.0.40/31 }
\t}

\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tdnat ip prefix to ip daddr map @pre0
\t}

\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip daddr 10.0.0.64/27 snat to 10.0.0.22
\t\tip saddr 10.0.0.40/31 snat ip prefix to ip daddr map { 10.0.0.48/30 : 10.0.0.50/31, 10.0.0.0/27 : 10.0.0.22/31 }
\t}
}
table inet filter {
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\ttcp dport 22 accept
\t}
}
";

    #[test]
    fn nat_rules_of_a_ruleset_with_maps_in_place() {
        assert_eq!(
            nat_rules(LAMBDA),
            [
                "dnat ip prefix to ip daddr map { 10.0.0.22/31 : 10.0.0.40/31, 10.0.0.50/31 : 10.0.0.40/31, 10.0.0.62/31 : 10.0.0.40/31, 10.0.0.86/31 : 10.0.0.40/31 }",
                "ip daddr 10.0.0.64/27 snat to 10.0.0.22",
                "ip saddr 10.0.0.40/31 snat ip prefix to ip daddr map { 10.0.0.0/27 : 10.0.0.22/31, 10.0.0.48/30 : 10.0.0.50/31 }",
            ]
        );
        // A check may write the elements in any order, and spaces freely.
        assert_eq!(
            normalize_nat("dnat ip prefix to ip daddr map { 10.0.0.86/31 : 10.0.0.40/31,10.0.0.22/31 : 10.0.0.40/31 }"),
            "dnat ip prefix to ip daddr map { 10.0.0.22/31 : 10.0.0.40/31, 10.0.0.86/31 : 10.0.0.40/31 }"
        );
        assert_eq!(normalize_nat("x { } y {  }"), "x { } y { }");
        assert_eq!(normalize_nat("a { b"), "a { b");
        assert!(nat_rules("").is_empty());
        let empty = "table ip ntkplane {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t}\n}\n";
        assert!(nat_rules(empty).is_empty());
    }

    #[test]
    fn sets_differences() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            set_diff(&s(&["a", "b"]), &s(&["b", "c"])),
            "missing [c]; unexpected [a]"
        );
    }
}
