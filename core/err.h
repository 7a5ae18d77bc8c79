/* err: tern's error codes and their messages.
 * Runtime failures return 0 or a negative TERN_E* code; the detail goes into a
 * caller-supplied `char err[]` (see err_set). Invariant violations use TERN_ASSERT,
 * which is always on and names file:line. */
#ifndef TERN_ERR_H
#define TERN_ERR_H
#include <stddef.h>

enum tern_err {
    TERN_OK = 0,
    TERN_EIO = -1,       /* file or socket I/O failed */
    TERN_EFORMAT = -2,   /* malformed input (GGUF, YAML, frame, JSON) */
    TERN_ENOMEM = -3,    /* allocation failed or a memory budget is exceeded */
    TERN_EINVAL = -4,    /* bad argument or option value */
    TERN_EPROTO = -5,    /* protocol violation or version mismatch */
    TERN_ETIMEOUT = -6,  /* a wait ran out */
    TERN_ENOTSUP = -7,   /* not supported (type, arch, ISA) */
    TERN_ENOTFOUND = -8, /* missing key, tensor, file */
    TERN_EPEER = -9,     /* a peer reported an error or went away */
    TERN_EAUTH = -10,    /* authentication refused */
    TERN_ECANCEL = -11,  /* cancelled by the user or a shutdown */
};

const char *tern_strerror(int code);

/* err_set: printf into err[errlen] (if err != NULL); returns code, so that
 * `return err_set(err, n, TERN_EFORMAT, "...")` reads naturally. */
int err_set(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

void tern_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#define TERN_ASSERT(e) ((e) ? (void)0 : tern_assert_fail(#e, __FILE__, __LINE__))

#endif
