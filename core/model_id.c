/* model_id: see model_id.h. */
#include "core/model_id.h"
#include "core/err.h"
#include "core/hash.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int hash_range(int fd, uint64_t off, uint64_t len, uint64_t *h, uint8_t *buf, size_t cap) {
    while (len > 0) {
        size_t k = len < cap ? (size_t)len : cap;
        ssize_t r = pread(fd, buf, k, (off_t)off);
        if (r <= 0) return -1;
        *h = hash_fnv1a(*h, buf, (size_t)r);
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return 0;
}

int model_id_compute(const char *path, uint64_t *size, char hash[MODEL_ID_HASH_LEN], char *err, size_t errlen) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return err_set(err, errlen, TERN_EIO, "cannot open model '%s'", path);
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return err_set(err, errlen, TERN_EIO, "cannot stat '%s'", path); }
    uint64_t n = (uint64_t)st.st_size, h = HASH_FNV_OFFSET;
    size_t cap = 1 << 20;
    uint8_t *buf = malloc(cap);
    int rc = buf ? 0 : -1;
    const uint64_t head = 4u << 20, tail = 1u << 20, sample = 64u << 10;
    if (!rc) rc = hash_range(fd, 0, n < head ? n : head, &h, buf, cap);
    for (int i = 1; !rc && i <= 64 && n > head + tail; i++) {
        uint64_t off = head + (n - head - tail) / 65 * (uint64_t)i;
        rc = hash_range(fd, off, sample, &h, buf, cap);
    }
    if (!rc && n > head) rc = hash_range(fd, n > head + tail ? n - tail : head, n > head + tail ? tail : n - head, &h, buf, cap);
    free(buf);
    close(fd);
    if (rc) return err_set(err, errlen, TERN_EIO, "cannot read '%s'", path);
    *size = n;
    snprintf(hash, MODEL_ID_HASH_LEN, "fnv64:%016llx", (unsigned long long)h);
    return 0;
}
