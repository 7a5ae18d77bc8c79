#!/usr/bin/env python3
"""kquant_layout: a second, independent reading of llama.cpp's Q4_0, Q5_0, Q4_K, Q5_K and Q6_K
block layouts, written from gguf-py's gguf/quants.py (its numpy dequantize_blocks, re-expressed in
plain Python: no numpy here), checked against tern's dequantisation of random blocks.

usage: kquant_layout.py TEST_KQUANT_BINARY   (runs `test_kquant --dump DIR`, then compares)
Every value must equal tern's to f32 rounding (gguf-py computes in f32 numpy arrays: each product
and difference is rounded to f32 here too)."""
import os
import struct
import subprocess
import sys
import tempfile

QK_K = 256


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def f16(b, off):
    return struct.unpack_from("<e", b, off)[0]


def q4_0(blk):
    # d (f16) | qs[16]: low nibbles are values 0..15, high nibbles 16..31; minus 8
    d = f16(blk, 0)
    qs = blk[2:18]
    vals = [(q & 0x0F) - 8 for q in qs] + [(q >> 4) - 8 for q in qs]
    return [f32(d * v) for v in vals]


def q5_0(blk):
    # d | qh (u32) | qs[16]: bit i of qh is bit 4 of value i; minus 16
    d = f16(blk, 0)
    qh = struct.unpack_from("<I", blk, 2)[0]
    qs = blk[6:22]
    ql = [q & 0x0F for q in qs] + [q >> 4 for q in qs]
    return [f32(d * ((ql[i] | (((qh >> i) & 1) << 4)) - 16)) for i in range(32)]


def k4_scale_min(scales):
    # gguf-py Q4_K.get_scale_min: rows d = scales[0:4], m = scales[4:8], m_d = scales[8:12]
    d, m, m_d = scales[0:4], scales[4:8], scales[8:12]
    sc = [x & 0x3F for x in d] + [(m_d[i] & 0x0F) | ((d[i] >> 2) & 0x30) for i in range(4)]
    mn = [x & 0x3F for x in m] + [(m_d[i] >> 4) | ((m[i] >> 2) & 0x30) for i in range(4)]
    return sc, mn


def q4_k(blk):
    d, dmin = f16(blk, 0), f16(blk, 2)
    sc, mn = k4_scale_min(blk[4:16])
    qs = blk[16:144]
    out = []
    for c in range(4):  # qs in rows of 32 bytes, each giving 32 low then 32 high nibbles
        row = qs[32 * c:32 * c + 32]
        for half, vals in enumerate(([q & 0x0F for q in row], [q >> 4 for q in row])):
            j = 2 * c + half
            dl, ml = f32(d * sc[j]), f32(dmin * mn[j])
            out += [f32(f32(dl * q) - ml) for q in vals]
    return out


def q5_k(blk):
    d, dmin = f16(blk, 0), f16(blk, 2)
    sc, mn = k4_scale_min(blk[4:16])
    qh = blk[16:48]
    qs = blk[48:176]
    out = []
    for c in range(4):
        row = qs[32 * c:32 * c + 32]
        for half, vals in enumerate(([q & 0x0F for q in row], [q >> 4 for q in row])):
            j = 2 * c + half  # sub-block j takes bit j of qh[l]
            dl, ml = f32(d * sc[j]), f32(dmin * mn[j])
            out += [f32(f32(dl * (vals[l] | (((qh[l] >> j) & 1) << 4))) - ml) for l in range(32)]
    return out


def q6_k(blk):
    # ql[128] | qh[64] | scales[16] (int8) | d; per 128 values: ql rows of 64 bytes give low
    # nibbles of 0..63 then high nibbles of 64..127; qh rows of 32 bytes give bits 0,2,4,6 pairs
    ql, qh = blk[0:128], blk[128:192]
    scales = struct.unpack_from("<16b", blk, 192)
    d = f16(blk, 208)
    q = []
    for h in range(2):
        lrow = ql[64 * h:64 * h + 64]
        low = [x & 0x0F for x in lrow] + [x >> 4 for x in lrow]
        hrow = qh[32 * h:32 * h + 32]
        high = [(x >> s) & 3 for s in (0, 2, 4, 6) for x in hrow]
        q += [(low[i] | (high[i] << 4)) - 32 for i in range(128)]
    return [f32(f32(d * scales[i // 16]) * q[i]) for i in range(QK_K)]


FORMATS = {"q4_0": (q4_0, 18, 32), "q5_0": (q5_0, 22, 32), "q4_k": (q4_k, 144, 256),
           "q5_k": (q5_k, 176, 256), "q6_k": (q6_k, 210, 256)}


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    fails = 0
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.argv[1], "--dump", d], check=True)
        for name, (fn, bsize, bvals) in FORMATS.items():
            blocks = open(os.path.join(d, name + ".bin"), "rb").read()
            raw = open(os.path.join(d, name + ".f32"), "rb").read()
            tern = struct.unpack("<%df" % (len(raw) // 4), raw)
            assert len(blocks) % bsize == 0 and len(blocks) // bsize * bvals == len(tern), name
            bad = 0
            for b in range(len(blocks) // bsize):
                want = fn(blocks[b * bsize:(b + 1) * bsize])
                got = tern[b * bvals:(b + 1) * bvals]
                for i in range(bvals):
                    if want[i] != got[i] and not (want[i] != want[i] and got[i] != got[i]):
                        if bad < 5:
                            print("%s: block %d value %d: gguf-py reading %r, tern %r" % (name, b, i, want[i], got[i]))
                        bad += 1
            print("%s: %d blocks, %d values, %d mismatches" % (name, len(blocks) // bsize, len(tern), bad))
            fails += bad != 0
    print("%d passed, %d failed" % (len(FORMATS) - fails, fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
