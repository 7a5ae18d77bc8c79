#!/usr/bin/env python3
# make.py: writes the seed files of fuzz_kvfile next to itself — small slot files in kvfile.h's
# layout (f16, f32 and q8_0 rows, one and several layers), a truncated one and a bad checksum.
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

def kvfile(n_layer, kv_dim, kv_type, toks):
    row = {0: 4 * kv_dim, 1: 2 * kv_dim, 2: kv_dim // 32 * 34}[kv_type]
    head = b"TERNKV\r\n" + struct.pack("<IQ", 1, 123456) + b"fnv64:0123456789abcdef".ljust(24, b"\0")
    head += struct.pack("<IIIIIQI", n_layer, 64, 260, kv_dim, kv_type, row, len(toks))
    head += struct.pack("<%di" % len(toks), *toks)
    kv = bytes((i * 7) & 0x3b for i in range(n_layer * 2 * len(toks) * row))
    head += struct.pack("<Q", len(kv))
    return head + kv + struct.pack("<Q", mix(fnvw(fnvw(0xcbf29ce484222325, head), kv)))

files = {
    "f16_2layers.kv": kvfile(2, 8, 1, [1, 5, 9]),
    "f32_1layer.kv": kvfile(1, 4, 0, [7]),
    "q8_0_1layer.kv": kvfile(1, 32, 2, [1, 2]),
}
files["truncated.kv"] = files["f16_2layers.kv"][:-20]
bad = bytearray(files["f32_1layer.kv"]); bad[-12] ^= 1
files["bad_checksum.kv"] = bytes(bad)
for name, b in files.items():
    open(os.path.join(here, name), "wb").write(b)
