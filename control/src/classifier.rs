//! User-space side of the `classify` eBPF program: load it (once per network namespace),
//! attach it to interfaces (TCX ingress), keep its MAC → mark map, read its counters.
//!
//! This is the only module that talks to the classifier's BPF objects.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{
        lpm_trie::{Key as LpmKey, LpmTrie},
        Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues,
    },
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLinkId,
        ProgramError, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use ntkplane_common::{
    Counters, FastPathCounters, MacKey, NeighbourEntry, CLASSIFY_PROG, CONFIG_FAST_PATH,
    CONFIG_MAP, EXCLUDE_MAP, FASTPATH_PROG, FIRST_NEIGHBOUR_SLOT, FP_STATS_MAP, MARK_MASK_GLOBAL,
    NEIGHBOURS_MAP, SLOT_IGNORED, SLOT_MISS, STATS_MAP, STATS_SLOTS,
};

use crate::{
    mac::MacAddr,
    netns::{Netns, NetnsError},
};

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at build time (empty when it
/// was not built; see `build.rs`).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ntkplane.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("this ntkplane binary was built without its eBPF object: run `cargo xtask build-ebpf`, then rebuild")]
    ObjectMissing,
    #[error("cannot load the eBPF object: {0}")]
    Object(#[source] EbpfError),
    /// Carries the verifier log in its message (aya's `ProgramError::LoadError`).
    #[error("cannot load program 'classify': {0}")]
    Load(#[source] ProgramError),
    #[error("the eBPF object lacks '{0}'")]
    Missing(&'static str),
    #[error("map '{name}': {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot attach 'classify' to interface '{iface}': {source}")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("cannot detach 'classify' from interface '{iface}': {source}")]
    Detach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("'classify' is not attached to interface '{0}'")]
    NotAttached(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("MAC {0} is a group (broadcast/multicast) or zero address and can never be a frame's source")]
    GroupMac(MacAddr),
    #[error("mark {mark:#x} has bits outside the mark mask {mask:#x}")]
    MarkOutsideMask { mark: u32, mask: u32 },
    #[error("mark 0 cannot select a table")]
    ZeroMark,
    #[error("neighbour map is full ({0} entries)")]
    Full(u32),
    #[error("cannot read the number of possible CPUs: {0}")]
    Cpus(String),
    #[error("pin {path}: {detail}")]
    Pin { path: PathBuf, detail: String },
    #[error("the pinned classifier in {dir} was loaded with mark mask {pinned:#x}, not {wanted:#x}: clean up first to change the mask")]
    MaskMismatch {
        dir: PathBuf,
        pinned: u32,
        wanted: u32,
    },
    #[error("the pinned classifier in {dir} has the fast path {}, not {}: clean up first to change it", on_off(*pinned), on_off(*wanted))]
    FastPathMismatch {
        dir: PathBuf,
        pinned: bool,
        wanted: bool,
    },
    #[error("the fast path is off: no exclusion map or fast-path counters")]
    NoFastPath,
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Whether this kernel has what the fast path needs: `bpf_fib_lookup` with
/// `BPF_FIB_LOOKUP_TBID` (6.5) and `BPF_FIB_LOOKUP_SKIP_NEIGH` (6.3), and `bpf_redirect_neigh`
/// (5.10). Detected from the running kernel's release; `Err` says why not.
pub fn kernel_supports_fast_path() -> Result<(), String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| format!("/proc/sys/kernel/osrelease: {e}"))?;
    let release = release.trim();
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    if (major, minor) >= (6, 5) {
        Ok(())
    } else {
        Err(format!(
            "kernel {release} lacks BPF_FIB_LOOKUP_TBID (needs 6.5)"
        ))
    }
}

/// A pin error naming the path, with every source of the error (the errno of a failed
/// `BPF_OBJ_PIN`/`BPF_OBJ_GET` included).
fn pin_err<E: Into<Box<dyn std::error::Error>>>(path: &Path, e: E) -> ClassifierError {
    let e: Box<dyn std::error::Error> = e.into();
    let mut detail = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    ClassifierError::Pin {
        path: path.to_path_buf(),
        detail,
    }
}

/// The ifindex the TCX link pinned at `path` is attached to: 0 when it was detached or its
/// device is gone (the kernel's `tcx_link_fill_link_info`). Read with the raw `bpf(2)`
/// calls, as aya does not expose it.
pub fn pinned_link_ifindex(path: &Path) -> std::io::Result<u32> {
    use std::os::unix::ffi::OsStrExt;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd, file_flags, path_fd (u32 each);
    // every other byte zero, as the kernel checks.
    let mut attr = [0u64; 3];
    attr[0] = cpath.as_ptr() as u64;
    // SAFETY: attr is a valid, zero-padded bpf_attr prefix for BPF_OBJ_GET; its size is passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id (u32 each), then an 8-aligned union whose tcx
    // member starts with the ifindex.
    let mut info = [0u64; 16];
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let attr = GetInfo {
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: attr points at a buffer of info_len bytes that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const GetInfo,
            std::mem::size_of::<GetInfo>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info[2] as u32)
}

/// The entries of the neighbour map pinned under `dir` (a daemon's pin directory), sorted
/// by MAC, read without adopting anything: for read-back by the lab and the tests.
pub fn pinned_entries(dir: &Path) -> Result<Vec<(MacAddr, NeighbourEntry)>, ClassifierError> {
    let p = dir.join(NEIGHBOURS_MAP);
    let md = MapData::from_pin(&p).map_err(|e| pin_err(&p, e))?;
    let map_err = |source| ClassifierError::Map {
        name: NEIGHBOURS_MAP,
        source,
    };
    let map: HashMap<MapData, MacKey, NeighbourEntry> =
        HashMap::try_from(Map::from_map_data(md).map_err(map_err)?).map_err(map_err)?;
    let mut out = Vec::new();
    for item in map.iter() {
        let (k, v) = item.map_err(map_err)?;
        out.push((MacAddr(k.addr), v));
    }
    out.sort_by_key(|(m, _)| *m);
    Ok(out)
}

/// The program: loaded by this process, or adopted from its pin.
#[allow(clippy::large_enum_variant)] // one per namespace; boxing buys nothing
enum Prog {
    Loaded(Ebpf),
    Adopted(SchedClassifier),
}

/// An attachment: owned by this process (detached on drop), or pinned (survives it).
enum Attachment {
    Owned(SchedClassifierLinkId),
    Pinned(PinnedLink),
}

const PROG_PIN: &str = "prog";
const LINK_PIN_PREFIX: &str = "link-";

/// Where bpffs is conventionally mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Mounts bpffs at [`BPFFS`] unless something is already mounted there.
pub fn ensure_bpffs() -> Result<(), ClassifierError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    // Two threads mounting at once would stack two bpffs and hide each other's pins.
    static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(BPFFS);
    if let Ok(st) = nix::sys::statfs::statfs(root) {
        if st.filesystem_type().0 == BPF_FS_MAGIC {
            return Ok(());
        }
    }
    std::fs::create_dir_all(root).map_err(|e| pin_err(root, e))?;
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| pin_err(root, format!("mount bpffs: {e}")))?;
    tracing::info!("mounted bpffs on {BPFFS}");
    Ok(())
}

/// Load-time settings.
#[derive(Debug, Clone, Copy)]
pub struct ClassifierConfig {
    /// Bits of `skb->mark` the classifier may change; the others are preserved.
    pub mark_mask: u32,
    /// Load `fastpath` (classify, then forward in TC) instead of `classify`.
    pub fast_path: bool,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            mark_mask: u32::MAX,
            fast_path: false,
        }
    }
}

/// The fast path's own maps.
struct FastPathMaps {
    stats: PerCpuArray<MapData, FastPathCounters>,
    exclude: LpmTrie<MapData, [u8; 4], u32>,
}

/// One loaded `classify` program with its maps, in one network namespace.
pub struct Classifier {
    prog: Prog,
    neighbours: HashMap<MapData, MacKey, NeighbourEntry>,
    stats: PerCpuArray<MapData, Counters>,
    mark_mask: u32,
    /// Attached interfaces (by name, in the namespace `netns`).
    links: BTreeMap<String, Attachment>,
    /// Set in pinned mode: program, maps and links live under this directory.
    pin_dir: Option<PathBuf>,
    netns: Netns,
    free_slots: Vec<u32>,
    next_slot: u32,
    nr_cpus: usize,
    /// Set when the program is `fastpath`.
    fp: Option<FastPathMaps>,
}

impl Classifier {
    /// Loads the program (verifier included) for use in `netns`. The program and its maps
    /// exist independently of any namespace; the namespace matters only for attaching.
    /// Nothing is pinned: everything goes when this value is dropped.
    pub fn load(netns: Netns, config: ClassifierConfig) -> Result<Self, ClassifierError> {
        let (mut ebpf, neighbours, stats) = Self::load_fresh(config, None)?;
        let fp = Self::take_fast_path_maps(&mut ebpf, config, None)?;
        let mut c = Self::assemble(
            Prog::Loaded(ebpf),
            neighbours,
            stats,
            config.mark_mask,
            netns,
            None,
            BTreeMap::new(),
        )?;
        c.fp = fp;
        Ok(c)
    }

    /// Takes (and pins under `pin`) the fast path's maps when `config.fast_path`.
    fn take_fast_path_maps(
        ebpf: &mut Ebpf,
        config: ClassifierConfig,
        pin: Option<&Path>,
    ) -> Result<Option<FastPathMaps>, ClassifierError> {
        if !config.fast_path {
            return Ok(None);
        }
        let mut take = |name: &'static str| -> Result<Map, ClassifierError> {
            let map = ebpf.take_map(name).ok_or(ClassifierError::Missing(name))?;
            if let Some(dir) = pin {
                let p = dir.join(name);
                map.pin(&p).map_err(|e| pin_err(&p, e))?;
            }
            Ok(map)
        };
        let stats =
            PerCpuArray::try_from(take(FP_STATS_MAP)?).map_err(|source| ClassifierError::Map {
                name: FP_STATS_MAP,
                source,
            })?;
        let exclude =
            LpmTrie::try_from(take(EXCLUDE_MAP)?).map_err(|source| ClassifierError::Map {
                name: EXCLUDE_MAP,
                source,
            })?;
        Ok(Some(FastPathMaps { stats, exclude }))
    }

    /// Pinned mode: adopts the program, maps and links pinned under `dir` if there are any
    /// (no reload, no refill: classification never stopped), else loads and pins them.
    /// Dropping the value leaves everything in place; [`Classifier::unpin`] removes it.
    pub fn open_pinned(
        netns: Netns,
        config: ClassifierConfig,
        dir: &Path,
    ) -> Result<Self, ClassifierError> {
        ensure_bpffs()?;
        let prog_pin = dir.join(PROG_PIN);
        if prog_pin.exists() {
            match Self::adopt(netns.clone(), config, dir) {
                Ok(c) => return Ok(c),
                Err(e @ ClassifierError::MaskMismatch { .. }) => return Err(e),
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    "the pinned classifier cannot be adopted ({e}): replacing it"
                ),
            }
        }
        // A partial pin set (a crash between pinning the maps and the program) or one that
        // cannot be adopted: replaced, never a reason to fail.
        Self::clear_pins(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| pin_err(dir, e))?;
        let (mut ebpf, neighbours, stats) = Self::load_fresh(config, Some(dir))?;
        let fp = Self::take_fast_path_maps(&mut ebpf, config, Some(dir))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(prog_name(config.fast_path))
            .expect("checked at load")
            .try_into()
            .map_err(ClassifierError::Load)?;
        prog.pin(&prog_pin).map_err(|e| pin_err(&prog_pin, e))?;
        tracing::info!(dir = %dir.display(), fast_path = config.fast_path, "classifier loaded and pinned");
        let mut c = Self::assemble(
            Prog::Loaded(ebpf),
            neighbours,
            stats,
            config.mark_mask,
            netns,
            Some(dir.to_path_buf()),
            BTreeMap::new(),
        )?;
        c.fp = fp;
        Ok(c)
    }

    /// Removes every pin under `dir` (link pins first: unpinning a link that nothing else
    /// holds detaches it).
    fn clear_pins(dir: &Path) -> Result<(), ClassifierError> {
        let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(pin_err(dir, e)),
        };
        if names.is_empty() {
            return Ok(());
        }
        names.sort_by_key(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(LINK_PIN_PREFIX))
        });
        for p in &names {
            std::fs::remove_file(p).map_err(|e| pin_err(p, e))?;
        }
        tracing::warn!(dir = %dir.display(), pins = names.len(), "stale or partial pin set removed");
        Ok(())
    }

    fn adopt(netns: Netns, config: ClassifierConfig, dir: &Path) -> Result<Self, ClassifierError> {
        let map_at = |name: &'static str| -> Result<Map, ClassifierError> {
            let p = dir.join(name);
            let md = MapData::from_pin(&p).map_err(|e| pin_err(&p, e))?;
            Map::from_map_data(md).map_err(|source| ClassifierError::Map { name, source })
        };
        let cfg: Array<MapData, u32> =
            Array::try_from(map_at(CONFIG_MAP)?).map_err(|source| ClassifierError::Map {
                name: CONFIG_MAP,
                source,
            })?;
        let pinned = cfg.get(&0, 0).map_err(|source| ClassifierError::Map {
            name: CONFIG_MAP,
            source,
        })?;
        if pinned != config.mark_mask {
            return Err(ClassifierError::MaskMismatch {
                dir: dir.to_path_buf(),
                pinned,
                wanted: config.mark_mask,
            });
        }
        // Pins from before the fast path have a one-entry settings array: fast path off.
        let pinned_fp = cfg.get(&CONFIG_FAST_PATH, 0).unwrap_or(0) != 0;
        if pinned_fp != config.fast_path {
            return Err(ClassifierError::FastPathMismatch {
                dir: dir.to_path_buf(),
                pinned: pinned_fp,
                wanted: config.fast_path,
            });
        }
        let fp = if pinned_fp {
            Some(FastPathMaps {
                stats: PerCpuArray::try_from(map_at(FP_STATS_MAP)?).map_err(|source| {
                    ClassifierError::Map {
                        name: FP_STATS_MAP,
                        source,
                    }
                })?,
                exclude: LpmTrie::try_from(map_at(EXCLUDE_MAP)?).map_err(|source| {
                    ClassifierError::Map {
                        name: EXCLUDE_MAP,
                        source,
                    }
                })?,
            })
        } else {
            None
        };
        let neighbours =
            HashMap::try_from(map_at(NEIGHBOURS_MAP)?).map_err(|source| ClassifierError::Map {
                name: NEIGHBOURS_MAP,
                source,
            })?;
        let stats =
            PerCpuArray::try_from(map_at(STATS_MAP)?).map_err(|source| ClassifierError::Map {
                name: STATS_MAP,
                source,
            })?;
        let prog_pin = dir.join(PROG_PIN);
        let prog = SchedClassifier::from_pin(&prog_pin).map_err(|e| pin_err(&prog_pin, e))?;
        let mut links = BTreeMap::new();
        for e in std::fs::read_dir(dir).map_err(|e| pin_err(dir, e))? {
            let e = e.map_err(|e| pin_err(dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(iface) = name.strip_prefix(LINK_PIN_PREFIX) {
                // A link detached behind our back, or left on an interface since deleted
                // (and maybe re-created): dropped, so the reconciler attaches again.
                let now = netns
                    .run(|| nix::net::if_::if_nametoindex(iface).unwrap_or(0))
                    .unwrap_or(0);
                let on = pinned_link_ifindex(&e.path()).unwrap_or(0);
                if on == 0 || on != now {
                    tracing::warn!(
                        iface,
                        pinned_on = on,
                        current = now,
                        "pinned classifier link is dead: re-attaching"
                    );
                    std::fs::remove_file(e.path()).map_err(|err| pin_err(&e.path(), err))?;
                    continue;
                }
                let l = PinnedLink::from_pin(e.path()).map_err(|err| pin_err(&e.path(), err))?;
                links.insert(iface.to_string(), Attachment::Pinned(l));
            }
        }
        tracing::info!(dir = %dir.display(), links = links.len(), "classifier adopted from pins");
        let mut c = Self::assemble(
            Prog::Adopted(prog),
            neighbours,
            stats,
            config.mark_mask,
            netns,
            Some(dir.to_path_buf()),
            links,
        )?;
        c.fp = fp;
        Ok(c)
    }

    #[allow(clippy::type_complexity)]
    /// Loads the object and the program; pins the maps under `pin` when given.
    fn load_fresh(
        config: ClassifierConfig,
        pin: Option<&Path>,
    ) -> Result<
        (
            Ebpf,
            HashMap<MapData, MacKey, NeighbourEntry>,
            PerCpuArray<MapData, Counters>,
        ),
        ClassifierError,
    > {
        if EBPF_OBJECT.is_empty() {
            return Err(ClassifierError::ObjectMissing);
        }
        let mut ebpf = EbpfLoader::new()
            .override_global(MARK_MASK_GLOBAL, &config.mark_mask, true)
            .load(EBPF_OBJECT)
            .map_err(ClassifierError::Object)?;
        let name = prog_name(config.fast_path);
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or(ClassifierError::Missing(name))?
            .try_into()
            .map_err(ClassifierError::Load)?;
        prog.load().map_err(ClassifierError::Load)?;
        let take = |ebpf: &mut Ebpf, name: &'static str| -> Result<Map, ClassifierError> {
            let map = ebpf.take_map(name).ok_or(ClassifierError::Missing(name))?;
            if let Some(dir) = pin {
                let p = dir.join(name);
                map.pin(&p).map_err(|e| pin_err(&p, e))?;
            }
            Ok(map)
        };
        let neighbours = HashMap::try_from(take(&mut ebpf, NEIGHBOURS_MAP)?).map_err(|source| {
            ClassifierError::Map {
                name: NEIGHBOURS_MAP,
                source,
            }
        })?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, STATS_MAP)?).map_err(|source| {
            ClassifierError::Map {
                name: STATS_MAP,
                source,
            }
        })?;
        let mut cfg: Array<MapData, u32> =
            Array::try_from(take(&mut ebpf, CONFIG_MAP)?).map_err(|source| {
                ClassifierError::Map {
                    name: CONFIG_MAP,
                    source,
                }
            })?;
        cfg.set(0, config.mark_mask, 0)
            .map_err(|source| ClassifierError::Map {
                name: CONFIG_MAP,
                source,
            })?;
        cfg.set(CONFIG_FAST_PATH, u32::from(config.fast_path), 0)
            .map_err(|source| ClassifierError::Map {
                name: CONFIG_MAP,
                source,
            })?;
        Ok((ebpf, neighbours, stats))
    }

    fn assemble(
        prog: Prog,
        neighbours: HashMap<MapData, MacKey, NeighbourEntry>,
        stats: PerCpuArray<MapData, Counters>,
        mark_mask: u32,
        netns: Netns,
        pin_dir: Option<PathBuf>,
        links: BTreeMap<String, Attachment>,
    ) -> Result<Self, ClassifierError> {
        let nr_cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| ClassifierError::Cpus(format!("{what}: {e}")))?;
        let mut c = Self {
            prog,
            neighbours,
            stats,
            mark_mask,
            links,
            pin_dir,
            netns,
            free_slots: Vec::new(),
            next_slot: FIRST_NEIGHBOUR_SLOT,
            nr_cpus,
            fp: None,
        };
        // Slots in use are the ones the map's entries point at (after an adoption too).
        let used: BTreeSet<u32> = c.entries()?.into_iter().map(|(_, e)| e.slot).collect();
        if let Some(max) = used.iter().max() {
            c.next_slot = max + 1;
            c.free_slots = (FIRST_NEIGHBOUR_SLOT..=*max)
                .filter(|s| !used.contains(s))
                .rev()
                .collect();
        }
        tracing::debug!(netns = ?c.netns, mask = format_args!("{:#x}", mark_mask), "classifier ready");
        Ok(c)
    }

    /// Whether this classifier keeps its objects pinned (they outlive the process).
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Detaches everywhere and removes every pin and the pin directory (and its parent when
    /// that becomes empty). The program and maps stay loaded until this value is dropped.
    pub fn unpin(&mut self) -> Result<(), ClassifierError> {
        let ifaces: Vec<String> = self.links.keys().cloned().collect();
        for i in ifaces {
            self.detach(&i)?;
        }
        if let Some(dir) = self.pin_dir.take() {
            for name in [
                PROG_PIN,
                NEIGHBOURS_MAP,
                STATS_MAP,
                CONFIG_MAP,
                FP_STATS_MAP,
                EXCLUDE_MAP,
            ] {
                let p = dir.join(name);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(pin_err(&p, e)),
                }
            }
            std::fs::remove_dir(&dir).map_err(|e| pin_err(&dir, e))?;
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent); // only succeeds when empty
            }
            tracing::info!(dir = %dir.display(), "classifier unpinned");
        }
        Ok(())
    }

    pub fn mark_mask(&self) -> u32 {
        self.mark_mask
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The loaded program, for `BPF_PROG_TEST_RUN` and inspection.
    pub fn program(&self) -> &SchedClassifier {
        match &self.prog {
            Prog::Loaded(e) => e
                .program(prog_name(self.fp.is_some()))
                .expect("checked at load")
                .try_into()
                .expect("checked at load"),
            Prog::Adopted(p) => p,
        }
    }

    fn program_mut(&mut self) -> &mut SchedClassifier {
        match &mut self.prog {
            Prog::Loaded(e) => e
                .program_mut(prog_name(self.fp.is_some()))
                .expect("checked at load")
                .try_into()
                .expect("checked at load"),
            Prog::Adopted(p) => p,
        }
    }

    /// Attaches to `iface` (a name inside this classifier's namespace) at TC ingress. On
    /// kernels ≥ 6.6 this is a TCX link, appended after the programs already there; the
    /// classifier returns `TCX_NEXT`, so they keep running. Attaching twice is a no-op.
    pub fn attach(&mut self, iface: &str) -> Result<(), ClassifierError> {
        if self.links.contains_key(iface) {
            return Ok(());
        }
        let netns = self.netns.clone();
        let pin = self
            .pin_dir
            .as_ref()
            .map(|d| d.join(format!("{LINK_PIN_PREFIX}{iface}")));
        let prog = self.program_mut();
        let id = netns
            .run(|| prog.attach(iface, TcAttachType::Ingress))?
            .map_err(|source| ClassifierError::Attach {
                iface: iface.to_string(),
                source,
            })?;
        let attachment = match pin {
            None => Attachment::Owned(id),
            Some(path) => {
                let link = prog
                    .take_link(id)
                    .map_err(|source| ClassifierError::Attach {
                        iface: iface.to_string(),
                        source,
                    })?;
                let fd: FdLink = link.try_into().map_err(|e| pin_err(&path, e))?;
                Attachment::Pinned(fd.pin(&path).map_err(|e| pin_err(&path, e))?)
            }
        };
        tracing::info!(iface, netns = ?netns, "classifier attached (tc ingress)");
        self.links.insert(iface.to_string(), attachment);
        Ok(())
    }

    /// Forgets the pinned links that are no longer attached to the interface of their name
    /// (detached behind our back, or the interface deleted, maybe re-created): their pins
    /// are removed, so that [`Classifier::attach`] attaches again. Returns their interfaces.
    pub fn prune_dead_links(&mut self) -> Vec<String> {
        let Some(dir) = self.pin_dir.clone() else {
            return vec![];
        };
        let netns = self.netns.clone();
        let dead: Vec<String> = self
            .links
            .iter()
            .filter(|(_, a)| matches!(a, Attachment::Pinned(_)))
            .map(|(i, _)| i.clone())
            .filter(|iface| {
                let pin = dir.join(format!("{LINK_PIN_PREFIX}{iface}"));
                let on = pinned_link_ifindex(&pin).unwrap_or(0);
                let name = iface.clone();
                let now = netns
                    .run(move || nix::net::if_::if_nametoindex(name.as_str()).unwrap_or(0))
                    .unwrap_or(0);
                on == 0 || on != now
            })
            .collect();
        for iface in &dead {
            self.links.remove(iface);
            let _ = std::fs::remove_file(dir.join(format!("{LINK_PIN_PREFIX}{iface}")));
            tracing::warn!(
                iface,
                "classifier link found dead (detached, or the interface re-created)"
            );
        }
        dead
    }

    /// Detaches from `iface`.
    pub fn detach(&mut self, iface: &str) -> Result<(), ClassifierError> {
        let attachment = self
            .links
            .remove(iface)
            .ok_or_else(|| ClassifierError::NotAttached(iface.to_string()))?;
        match attachment {
            Attachment::Owned(id) => {
                self.program_mut()
                    .detach(id)
                    .map_err(|source| ClassifierError::Detach {
                        iface: iface.to_string(),
                        source,
                    })?
            }
            // Removing the pin and closing the last fd destroys the TCX link.
            Attachment::Pinned(p) => drop(p.unpin().map_err(|e| pin_err(Path::new(iface), e))?),
        }
        tracing::info!(iface, "classifier detached");
        Ok(())
    }

    pub fn attached(&self) -> impl Iterator<Item = &str> {
        self.links.keys().map(String::as_str)
    }

    /// Inserts or updates the entry for `mac`. Its counters restart from zero when the MAC
    /// is new and keep counting when only the mark changes.
    pub fn insert(&mut self, mac: MacAddr, mark: u32, table: u32) -> Result<(), ClassifierError> {
        if mac.is_group() || mac.is_zero() {
            return Err(ClassifierError::GroupMac(mac));
        }
        if mark == 0 {
            return Err(ClassifierError::ZeroMark);
        }
        if mark & !self.mark_mask != 0 {
            return Err(ClassifierError::MarkOutsideMask {
                mark,
                mask: self.mark_mask,
            });
        }
        let key = MacKey::new(mac.0);
        let slot = match self.neighbours.get(&key, 0) {
            Ok(existing) => existing.slot,
            Err(MapError::KeyNotFound) => {
                let slot = self.alloc_slot()?;
                // Zero the slot before the entry that points at it becomes visible.
                let zeros = PerCpuValues::try_from(vec![Counters::default(); self.nr_cpus])
                    .map_err(|e| ClassifierError::Map {
                        name: STATS_MAP,
                        source: MapError::IoError(e),
                    })?;
                self.stats
                    .set(slot, zeros, 0)
                    .map_err(|source| ClassifierError::Map {
                        name: STATS_MAP,
                        source,
                    })?;
                if let Some(fp) = &mut self.fp {
                    let zeros =
                        PerCpuValues::try_from(vec![FastPathCounters::default(); self.nr_cpus])
                            .map_err(|e| ClassifierError::Map {
                                name: FP_STATS_MAP,
                                source: MapError::IoError(e),
                            })?;
                    fp.stats
                        .set(slot, zeros, 0)
                        .map_err(|source| ClassifierError::Map {
                            name: FP_STATS_MAP,
                            source,
                        })?;
                }
                slot
            }
            Err(source) => {
                return Err(ClassifierError::Map {
                    name: NEIGHBOURS_MAP,
                    source,
                })
            }
        };
        let entry = NeighbourEntry {
            mark,
            table,
            slot,
            _pad: 0,
        };
        self.neighbours
            .insert(key, entry, 0)
            .map_err(|source| ClassifierError::Map {
                name: NEIGHBOURS_MAP,
                source,
            })?;
        tracing::debug!(%mac, mark, table, slot, "classifier entry set");
        Ok(())
    }

    /// Removes the entry for `mac`; returns whether there was one.
    pub fn remove(&mut self, mac: MacAddr) -> Result<bool, ClassifierError> {
        let key = MacKey::new(mac.0);
        let slot = match self.neighbours.get(&key, 0) {
            Ok(e) => e.slot,
            Err(MapError::KeyNotFound) => return Ok(false),
            Err(source) => {
                return Err(ClassifierError::Map {
                    name: NEIGHBOURS_MAP,
                    source,
                })
            }
        };
        self.neighbours
            .remove(&key)
            .map_err(|source| ClassifierError::Map {
                name: NEIGHBOURS_MAP,
                source,
            })?;
        self.free_slots.push(slot);
        tracing::debug!(%mac, "classifier entry removed");
        Ok(true)
    }

    /// Every entry of the map, sorted by MAC.
    pub fn entries(&self) -> Result<Vec<(MacAddr, NeighbourEntry)>, ClassifierError> {
        let mut out = Vec::new();
        for item in self.neighbours.iter() {
            let (k, v) = item.map_err(|source| ClassifierError::Map {
                name: NEIGHBOURS_MAP,
                source,
            })?;
            out.push((MacAddr(k.addr), v));
        }
        out.sort_by_key(|(m, _)| *m);
        Ok(out)
    }

    /// Packets and bytes classified for `mac` (summed over CPUs), if it has an entry.
    pub fn counters(&self, mac: MacAddr) -> Result<Option<Counters>, ClassifierError> {
        match self.neighbours.get(&MacKey::new(mac.0), 0) {
            Ok(e) => self.slot_counters(e.slot).map(Some),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(ClassifierError::Map {
                name: NEIGHBOURS_MAP,
                source,
            }),
        }
    }

    /// IPv4 frames whose source MAC had no entry.
    pub fn misses(&self) -> Result<Counters, ClassifierError> {
        self.slot_counters(SLOT_MISS)
    }

    /// Frames not looked at (not IPv4, too short, group source MAC).
    pub fn ignored(&self) -> Result<Counters, ClassifierError> {
        self.slot_counters(SLOT_IGNORED)
    }

    fn slot_counters(&self, slot: u32) -> Result<Counters, ClassifierError> {
        let per_cpu = self
            .stats
            .get(&slot, 0)
            .map_err(|source| ClassifierError::Map {
                name: STATS_MAP,
                source,
            })?;
        Ok(per_cpu.iter().fold(Counters::default(), |acc, c| Counters {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }))
    }

    /// Whether the loaded program is `fastpath`.
    pub fn fast_path(&self) -> bool {
        self.fp.is_some()
    }

    /// Fast-path outcome counters for `mac` (summed over CPUs), if it has an entry and the
    /// fast path is on. Indices: `ntkplane_common::fp`.
    pub fn fast_path_counters(
        &self,
        mac: MacAddr,
    ) -> Result<Option<FastPathCounters>, ClassifierError> {
        let Some(fp) = &self.fp else {
            return Ok(None);
        };
        let slot = match self.neighbours.get(&MacKey::new(mac.0), 0) {
            Ok(e) => e.slot,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(source) => {
                return Err(ClassifierError::Map {
                    name: NEIGHBOURS_MAP,
                    source,
                })
            }
        };
        let per_cpu = fp
            .stats
            .get(&slot, 0)
            .map_err(|source| ClassifierError::Map {
                name: FP_STATS_MAP,
                source,
            })?;
        let mut sum = FastPathCounters::default();
        for c in per_cpu.iter() {
            for (s, v) in sum.packets.iter_mut().zip(c.packets) {
                *s += v;
            }
        }
        Ok(Some(sum))
    }

    /// The exclusion trie's entries: (prefix, length) → kind (`EXCLUDE_*`).
    pub fn excluded(&self) -> Result<BTreeMap<(Ipv4Addr, u8), u32>, ClassifierError> {
        let fp = self.fp.as_ref().ok_or(ClassifierError::NoFastPath)?;
        let mut out = BTreeMap::new();
        for item in fp.exclude.iter() {
            let (k, v) = item.map_err(|source| ClassifierError::Map {
                name: EXCLUDE_MAP,
                source,
            })?;
            out.insert((Ipv4Addr::from(k.data()), k.prefix_len() as u8), v);
        }
        Ok(out)
    }

    /// Makes the exclusion trie hold exactly `want` ((prefix, length) → kind): adds and
    /// updates first, then removes, so a destination that stays excluded never leaks to the
    /// fast path in between. Host bits of a prefix are ignored (the trie masks them).
    pub fn set_excluded(
        &mut self,
        want: &BTreeMap<(Ipv4Addr, u8), u32>,
    ) -> Result<(), ClassifierError> {
        let have = self.excluded()?;
        let fp = self.fp.as_mut().ok_or(ClassifierError::NoFastPath)?;
        let err = |source| ClassifierError::Map {
            name: EXCLUDE_MAP,
            source,
        };
        let norm = |(a, l): (Ipv4Addr, u8)| {
            let l = l.min(32);
            let m = if l == 0 { 0 } else { u32::MAX << (32 - l) };
            (Ipv4Addr::from(u32::from(a) & m), l)
        };
        let want: BTreeMap<(Ipv4Addr, u8), u32> =
            want.iter().map(|(k, v)| (norm(*k), *v)).collect();
        for ((a, l), kind) in &want {
            if have.get(&(*a, *l)) != Some(kind) {
                fp.exclude
                    .insert(&LpmKey::new(u32::from(*l), a.octets()), *kind, 0)
                    .map_err(err)?;
            }
        }
        for (a, l) in have.keys() {
            if !want.contains_key(&(*a, *l)) {
                match fp.exclude.remove(&LpmKey::new(u32::from(*l), a.octets())) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(source) => return Err(err(source)),
                }
            }
        }
        Ok(())
    }

    fn alloc_slot(&mut self) -> Result<u32, ClassifierError> {
        if let Some(s) = self.free_slots.pop() {
            return Ok(s);
        }
        if self.next_slot >= STATS_SLOTS {
            return Err(ClassifierError::Full(STATS_SLOTS - FIRST_NEIGHBOUR_SLOT));
        }
        let s = self.next_slot;
        self.next_slot += 1;
        Ok(s)
    }
}

/// The program loaded for the fast-path setting.
fn prog_name(fast_path: bool) -> &'static str {
    if fast_path {
        FASTPATH_PROG
    } else {
        CLASSIFY_PROG
    }
}
