//! Everything that touches the kernel, one module per subsystem, and the reconciler over
//! them. The pure model and diff are in [`crate::plan`].
pub mod events;
pub mod nft;
pub mod nftgen;
pub mod reconcile;
pub mod rt_tables;
pub mod rtnl;
pub mod sysctl;

/// The desired content of a namespace is the model's (`plan`); re-exported for callers.
pub use crate::plan::Desired;
pub use reconcile::{KernelError, Reconciler, Report};

use crate::netns::{Netns, NetnsError};

/// Runs `f` on a dedicated thread inside `netns` with a current-thread tokio runtime:
/// netlink sockets opened there (and `nft` processes spawned there) belong to `netns`.
pub fn in_netns<T: Send>(
    netns: &Netns,
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send,
) -> Result<T, NetnsError> {
    netns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        f(&rt)
    })
}
