/* err: error strings and the always-on assertion. */
#include "core/err.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

const char *tern_strerror(int code) {
    switch (code) {
    case TERN_OK: return "success";
    case TERN_EIO: return "I/O error";
    case TERN_EFORMAT: return "malformed input";
    case TERN_ENOMEM: return "out of memory";
    case TERN_EINVAL: return "invalid argument";
    case TERN_EPROTO: return "protocol error";
    case TERN_ETIMEOUT: return "timed out";
    case TERN_ENOTSUP: return "not supported";
    case TERN_ENOTFOUND: return "not found";
    case TERN_EPEER: return "peer error";
    case TERN_EAUTH: return "authentication failed";
    case TERN_ECANCEL: return "cancelled";
    default: return "unknown error";
    }
}

int err_set(char *err, size_t errlen, int code, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

void tern_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "tern: assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}
