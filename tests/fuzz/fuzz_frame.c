/* fuzz_frame: arbitrary bytes into the frame decoder (tp_frames_decode), the code every
 * message from the network goes through. Input layout: byte 0 picks the frame count (0-3);
 * each frame but the last is prefixed by a 16-bit little-endian length (clipped to what is
 * left), the last takes the rest. A decoded message must be self-consistent and re-encode. */
#include "proto/transport.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static tp_msg_t msg;   /* reused across inputs, as a receive loop does */
    if (size < 1) return 0;
    int nfr = data[0] & 3;
    const uint8_t *p = data + 1, *end = data + size;
    tp_iov_t fr[3];
    for (int i = 0; i < nfr; i++) {
        size_t n = (size_t)(end - p);
        if (i + 1 < nfr) {
            size_t want = end - p >= 2 ? (size_t)(p[0] | p[1] << 8) : 0;
            p += end - p >= 2 ? 2 : end - p;
            n = want < (size_t)(end - p) ? want : (size_t)(end - p);
        }
        fr[i] = (tp_iov_t){p, n};
        p += n;
    }
    char err[512];
    int rc = tp_frames_decode(&msg, fr, nfr, "fuzz", 1u << 20, err, sizeof err);
    if (rc == 0) {
        if (!msg.msg || msg.msg->tensor_bytes != msg.tensor_bytes) abort();
        if (tp_msg_check(msg.msg, msg.tensor_bytes, "fuzz", err, sizeof err)) abort();
        size_t n = tern__msg__get_packed_size(msg.msg);
        uint8_t *b = malloc(n ? n : 1);
        if (tern__msg__pack(msg.msg, b) != n) abort();
        free(b);
        if (msg.tensor_bytes && (nfr != 2 || fr[1].n != msg.tensor_bytes ||
                                 memcmp(msg.tensor, fr[1].p, fr[1].n)))
            abort();
    } else if (msg.msg || !err[0]) {
        abort();
    }
    return 0;
}
