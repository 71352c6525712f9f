//! The daemon's event stream (`ntkplane monitor`, as babeld's `monitor`): what the daemon
//! did and saw, as typed events, fanned out to any number of monitor connections.
//!
//! [`Events`] is a `tokio::sync::broadcast` channel: `emit` never blocks and never fails,
//! whoever listens (or nobody). A monitor that falls more than [`CAPACITY`] events behind
//! loses the oldest ones and is told how many ([`Event::Lagged`]); the daemon never waits
//! for a reader.
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::proto::Request;

/// Events kept for a slow monitor before it starts losing them.
pub const CAPACITY: usize = 1024;
/// Longest request (as JSON) a `command` event carries.
pub const MAX_REQUEST_IN_EVENT: usize = 4096;

/// Something the daemon did or saw. One JSON object per line in the stream, tagged with
/// `"event"` (kebab-case), plus the time it was emitted (see [`Stamped`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A command that changes the model was applied (`ok`) or refused (`error`): its name,
    /// and the request itself unless it is longer than [`MAX_REQUEST_IN_EVENT`] (a large
    /// `etp`): the hub keeps [`CAPACITY`] events, and their size must stay bounded.
    Command {
        command: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<Request>,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Something changed behind ntkplane's back was put back in namespace `netns`:
    /// `kind` is the operation ([`super::metrics::op_kind`], or `classifier-attach`,
    /// `classifier-detach`, `sysctl`, `link-up`), `detail` what exactly.
    Repair {
        netns: String,
        kind: String,
        detail: String,
    },
    /// A namespace could not be repaired (tried again at the next check).
    RepairFailed {
        netns: String,
        error: String,
    },
    /// A step of an identity's lifecycle (lifecycle.md) that reached the kernel.
    Identity {
        step: IdentityStep,
        identity: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        op_id: Option<u64>,
    },
    /// Protocol events (QSPN/neighbourhood), for the code that will run the protocols: an
    /// arc came up, went down, changed cost.
    ArcUp {
        identity: u32,
        arc: u32,
        cost: u64,
    },
    ArcDown {
        identity: u32,
        arc: u32,
    },
    ArcCost {
        identity: u32,
        arc: u32,
        cost: u64,
    },
    /// The paths an identity knows towards a destination changed (`paths`: how many now).
    PathChanged {
        identity: u32,
        lvl: usize,
        pos: u32,
        paths: usize,
    },
    /// The daemon is stopping (`quit`, SIGTERM, SIGINT): the stream ends.
    Shutdown {
        reason: String,
    },
    /// Only in a monitor's stream: it fell behind and `missed` events were dropped for it.
    Lagged {
        missed: u64,
    },
}

/// The lifecycle steps of an identity the stream reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityStep {
    PrepareEnterNet,
    PrepareMigrate,
    EnterNetPhase1,
    MigratePhase1,
    EnterNetPhase2,
    MigratePhase2,
    NeighbourMigrated,
    RemoveOuterArcs,
    Removed,
    /// Dismissed after an entry (E13) or chained to a removed identity.
    Dismissed,
    /// Its bootstrap ended on the give-up timer (qspn.md §13.2).
    BootstrapOver,
}

impl Event {
    /// The `command` event of a handled request.
    pub fn command(req: &Request, ok: bool, error: Option<String>) -> Event {
        /// The request's tag, read back typed from its JSON.
        #[derive(Deserialize)]
        struct Tag {
            command: String,
        }
        let text = serde_json::to_string(req).expect("requests serialize");
        let command = serde_json::from_str::<Tag>(&text).map_or_else(|_| "?".into(), |t| t.command);
        Event::Command {
            command,
            request: (text.len() <= MAX_REQUEST_IN_EVENT).then(|| req.clone()),
            ok,
            error,
        }
    }
}

impl IdentityStep {
    /// The lifecycle step a successful request is, with the identity and operation it names.
    pub fn of(req: &Request) -> Option<(IdentityStep, u32, Option<u64>)> {
        use IdentityStep as S;
        Some(match req {
            Request::PrepareEnterNetPhase1 { args, op_id, .. } => {
                (S::PrepareEnterNet, args.identity, Some(*op_id))
            }
            Request::PrepareMigratePhase1 { args, op_id, .. } => {
                (S::PrepareMigrate, args.identity, Some(*op_id))
            }
            Request::EnterNetPhase1 {
                identity, op_id, ..
            } => (S::EnterNetPhase1, *identity, Some(*op_id)),
            Request::MigratePhase1 {
                identity, op_id, ..
            } => (S::MigratePhase1, *identity, Some(*op_id)),
            Request::EnterNetPhase2 { identity, op_id } => {
                (S::EnterNetPhase2, *identity, Some(*op_id))
            }
            Request::MigratePhase2 { identity, op_id } => {
                (S::MigratePhase2, *identity, Some(*op_id))
            }
            Request::NeighbourMigrated { identity, .. } => (S::NeighbourMigrated, *identity, None),
            Request::RemoveOuterArcs { identity } => (S::RemoveOuterArcs, *identity, None),
            Request::RemoveIdentity { identity } => (S::Removed, *identity, None),
            _ => return None,
        })
    }
}

/// The answer to `monitor` before the stream starts: the subscription is in place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Monitoring {
    pub monitoring: bool,
}

/// An event with the wall-clock time it was emitted (ms since the UNIX epoch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    pub time_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

impl Stamped {
    pub fn now(event: Event) -> Self {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Stamped { time_ms, event }
    }
}

/// The hub: cheap to clone; every clone emits into the same stream.
#[derive(Clone, Debug)]
pub struct Events {
    tx: broadcast::Sender<Stamped>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        Events {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    /// Sends `event` to every monitor; never blocks (no monitor: dropped).
    pub fn emit(&self, event: Event) {
        let _ = self.tx.send(Stamped::now(event));
    }

    /// A new monitor: receives what is emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Stamped> {
        self.tx.subscribe()
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Command {
                command,
                request,
                ok,
                error,
            } => {
                // The request's own JSON is its exact rendering (the CLI's words).
                let req = match request {
                    Some(r) => serde_json::to_string(r).map_err(|_| std::fmt::Error)?,
                    None => format!("{command} (request too long to show)"),
                };
                match (ok, error) {
                    (true, _) => write!(f, "command  applied {req}"),
                    (false, e) => {
                        write!(f, "command  refused {req}: {}", e.as_deref().unwrap_or(""))
                    }
                }
            }
            Event::Repair {
                netns,
                kind,
                detail,
            } => write!(f, "repair   [{netns}] {kind}: {detail}"),
            Event::RepairFailed { netns, error } => write!(f, "repair   [{netns}] failed: {error}"),
            Event::Identity {
                step,
                identity,
                op_id,
            } => {
                let step = serde_json::to_value(step).map_err(|_| std::fmt::Error)?;
                write!(
                    f,
                    "identity {identity} {}",
                    step.as_str().unwrap_or_default()
                )?;
                match op_id {
                    Some(op) => write!(f, " (operation {op})"),
                    None => Ok(()),
                }
            }
            Event::ArcUp {
                identity,
                arc,
                cost,
            } => write!(f, "arc      identity {identity} arc {arc} up, cost {cost}"),
            Event::ArcDown { identity, arc } => {
                write!(f, "arc      identity {identity} arc {arc} down")
            }
            Event::ArcCost {
                identity,
                arc,
                cost,
            } => write!(f, "arc      identity {identity} arc {arc} cost {cost}"),
            Event::PathChanged {
                identity,
                lvl,
                pos,
                paths,
            } => write!(
                f,
                "paths    identity {identity} to ({lvl},{pos}): {paths} path(s)"
            ),
            Event::Shutdown { reason } => write!(f, "shutdown {reason}"),
            Event::Lagged { missed } => write!(
                f,
                "lagged   this monitor fell behind: {missed} event(s) dropped"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_kebab_case_json_lines() {
        let e = Stamped {
            time_ms: 7,
            event: Event::Repair {
                netns: "default".into(),
                kind: "add-rule".into(),
                detail: "x".into(),
            },
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "repair");
        assert_eq!(v["time_ms"], 7);
        assert_eq!(serde_json::from_value::<Stamped>(v).unwrap(), e);
        let s = serde_json::to_value(Event::RepairFailed {
            netns: "a".into(),
            error: "b".into(),
        })
        .unwrap();
        assert_eq!(s["event"], "repair-failed");
        let c = serde_json::to_value(Event::command(
            &Request::RemoveArc {
                identity: 0,
                arc: 1,
            },
            true,
            None,
        ))
        .unwrap();
        assert_eq!(c["command"], "remove-arc");
        assert_eq!(c["request"]["command"], "remove-arc");
        assert!(c.get("error").is_none());
        // A request too long to keep: its name only.
        let big = Request::Etp {
            identity: 0,
            feed: crate::daemon::proto::Feed {
                neighbours: (0..500)
                    .map(|arc| crate::daemon::proto::KnownNeighbour {
                        arc,
                        address: "1.1.1.1".into(),
                    })
                    .collect(),
                paths: vec![],
            },
        };
        let c = serde_json::to_value(Event::command(&big, true, None)).unwrap();
        assert_eq!(c["command"], "etp");
        assert!(c.get("request").is_none(), "{c}");
    }

    /// A monitor that does not read loses the oldest events and is told how many; the
    /// emitter never blocks.
    #[tokio::test]
    async fn a_slow_monitor_lags_and_the_emitter_never_blocks() {
        let hub = Events::new();
        let mut rx = hub.subscribe();
        for i in 0..(CAPACITY as u64 + 10) {
            hub.emit(Event::Lagged { missed: i });
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("{other:?}"),
        }
        let next = rx.recv().await.unwrap();
        assert_eq!(next.event, Event::Lagged { missed: 10 });
    }

    #[test]
    fn lifecycle_requests_map_to_steps() {
        let r = Request::MigratePhase2 {
            identity: 3,
            op_id: 9,
        };
        assert_eq!(
            IdentityStep::of(&r),
            Some((IdentityStep::MigratePhase2, 3, Some(9)))
        );
        assert_eq!(IdentityStep::of(&Request::Status {}), None);
    }
}
