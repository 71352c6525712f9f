//! Crafted frames for `BPF_PROG_TEST_RUN`, and the `__sk_buff` context it takes.

/// `sizeof(struct __sk_buff)` on this kernel's UAPI.
pub const SKB_CTX_LEN: usize = 192;
/// Offset of `__sk_buff.mark`.
pub const SKB_MARK_OFF: usize = 8;

/// A context whose only non-zero field is `mark` (the kernel rejects other fields).
pub fn skb_ctx(mark: u32) -> [u8; SKB_CTX_LEN] {
    let mut c = [0u8; SKB_CTX_LEN];
    c[SKB_MARK_OFF..SKB_MARK_OFF + 4].copy_from_slice(&mark.to_ne_bytes());
    c
}

pub fn ctx_mark(ctx: &[u8]) -> u32 {
    u32::from_ne_bytes(ctx[SKB_MARK_OFF..SKB_MARK_OFF + 4].try_into().unwrap())
}

/// An Ethernet frame of `len` bytes (≥ 14) from `src` with the given EtherType; for IPv4 it
/// carries a plausible header (version 4, IHL 5) when there is room.
pub fn frame(src: [u8; 6], ethertype: u16, len: usize) -> Vec<u8> {
    assert!(len >= 14);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    if ethertype == 0x0800 && len >= 34 {
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        f[22] = 64; // TTL
        f[23] = 17; // UDP
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    }
    f
}

/// What one `BPF_PROG_TEST_RUN` of the classifier gave.
pub struct TestRunOut {
    pub verdict: u32,
    pub mark: u32,
    /// Mean time per run as the kernel reports it.
    pub duration: std::time::Duration,
    /// The frame as the program left it.
    pub data: Vec<u8>,
}

/// Runs the classifier `repeat` times on `data` with `skb->mark = mark_in`.
pub fn test_run(
    c: &ntkplane::classifier::Classifier,
    data: &[u8],
    mark_in: u32,
    repeat: u32,
) -> TestRunOut {
    use aya::programs::{TestRun, TestRunOptions};
    let ctx_in = skb_ctx(mark_in);
    let mut ctx_out = [0u8; SKB_CTX_LEN];
    let mut data_out = vec![0u8; data.len() + 64];
    let r = c
        .program()
        .test_run(TestRunOptions {
            data_in: Some(data),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    data_out.truncate(r.data_size_out as usize);
    TestRunOut {
        verdict: r.return_value,
        mark: ctx_mark(&ctx_out),
        duration: r.duration,
        data: data_out,
    }
}

/// Offset of `__sk_buff.ifindex`.
pub const SKB_IFINDEX_OFF: usize = 40;
/// Offset of `__sk_buff.cb[0]`.
pub const SKB_CB_OFF: usize = 48;

/// What one `BPF_PROG_TEST_RUN` of any TC program gave, with the context's scratch area.
pub struct RunOut {
    pub verdict: u32,
    pub mark: u32,
    /// `__sk_buff.cb[0..5]` as the program left it.
    pub cb: [u32; 5],
    pub data: Vec<u8>,
}

/// Runs `prog` once on `data` as if it had arrived on interface `ifindex` (of the calling
/// thread's namespace) with `skb->mark = mark_in`.
pub fn run_on(
    prog: &aya::programs::SchedClassifier,
    data: &[u8],
    mark_in: u32,
    ifindex: u32,
) -> RunOut {
    use aya::programs::{TestRun, TestRunOptions};
    let mut ctx_in = skb_ctx(mark_in);
    ctx_in[SKB_IFINDEX_OFF..SKB_IFINDEX_OFF + 4].copy_from_slice(&ifindex.to_ne_bytes());
    let mut ctx_out = [0u8; SKB_CTX_LEN];
    let mut data_out = vec![0u8; data.len() + 64];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(data),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    data_out.truncate(r.data_size_out as usize);
    let mut cb = [0u32; 5];
    for (i, c) in cb.iter_mut().enumerate() {
        let o = SKB_CB_OFF + 4 * i;
        *c = u32::from_ne_bytes(ctx_out[o..o + 4].try_into().unwrap());
    }
    RunOut {
        verdict: r.return_value,
        mark: ctx_mark(&ctx_out),
        cb,
        data: data_out,
    }
}
