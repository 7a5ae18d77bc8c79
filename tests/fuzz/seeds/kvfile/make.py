#!/usr/bin/env python3
# make.py: writes the seed files of fuzz_kvfile next to itself — small slot files in kvfile.h's
# layout (f16, f32 and q8_0 rows, one and several layers; plain and yarn RoPE records, and a
# version-1 file without one), a truncated one and a bad checksum.
import os, struct
here = os.path.dirname(os.path.abspath(__file__))
M = 0xFFFFFFFFFFFFFFFF

def fnvw(h, b):
    i = 0
    while i + 8 <= len(b):
        h = ((h ^ struct.unpack_from("<Q", b, i)[0]) * 1099511628211) & M
        i += 8
    for c in b[i:]:
        h = ((h ^ c) * 1099511628211) & M
    return h

def mix(x):
    x ^= x >> 33; x = (x * 0xff51afd7ed558ccd) & M; x ^= x >> 33
    x = (x * 0xc4ceb9fe1a85ec53) & M; x ^= x >> 33
    return x

PLAIN = (0, 10000.0, 1.0, 0, 0.0, 1.0, 0.0, 0.0, 0)
YARN = (2, 500000.0, 0.25, 4096, 1.0, 1.0, 32.0, 1.0, 0x0123456789abcdef)

# rope: the record (type, freq_base, freq_scale, n_ctx_orig, ext_factor, attn_factor, beta_fast,
# beta_slow, factors' hash); None: a version-1 file
def kvfile(n_layer, kv_dim, kv_type, toks, rope=PLAIN):
    row = {0: 4 * kv_dim, 1: 2 * kv_dim, 2: kv_dim // 32 * 34}[kv_type]
    ver = 1 if rope is None else 2
    head = b"TERNKV\r\n" + struct.pack("<IQ", ver, 123456) + b"fnv64:0123456789abcdef".ljust(24, b"\0")
    head += struct.pack("<IIIIIQ", n_layer, 64, 260, kv_dim, kv_type, row)
    if rope is not None:
        head += struct.pack("<IffIffffQ", *rope)
    head += struct.pack("<I", len(toks))
    head += struct.pack("<%di" % len(toks), *toks)
    kv = bytes((i * 7) & 0x3b for i in range(n_layer * 2 * len(toks) * row))
    head += struct.pack("<Q", len(kv))
    return head + kv + struct.pack("<Q", mix(fnvw(fnvw(0xcbf29ce484222325, head), kv)))

files = {
    "f16_2layers.kv": kvfile(2, 8, 1, [1, 5, 9]),
    "f32_1layer.kv": kvfile(1, 4, 0, [7]),
    "q8_0_1layer.kv": kvfile(1, 32, 2, [1, 2]),
    "yarn_f16.kv": kvfile(2, 8, 1, [3, 4], YARN),
    "v1_f16.kv": kvfile(1, 8, 1, [2, 9], None),
}
files["truncated.kv"] = files["f16_2layers.kv"][:-20]
bad = bytearray(files["f32_1layer.kv"]); bad[-12] ^= 1
files["bad_checksum.kv"] = bytes(bad)
for name, b in files.items():
    open(os.path.join(here, name), "wb").write(b)
