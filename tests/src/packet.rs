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
