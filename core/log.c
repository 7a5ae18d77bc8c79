/* log: formats a whole line in a local buffer and writes it with one write(2),
 * so lines from threads and processes sharing stderr never interleave. */
#include "core/log.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char g_role[16] = "C";
static int g_level = LOG_I;
static int g_json;

void log_set_role(const char *role) { snprintf(g_role, sizeof g_role, "%s", role ? role : "?"); }
void log_set_level(int level) { g_level = level; }
int log_get_level(void) { return g_level; }
void log_set_json(int on) { g_json = on; }

static size_t json_escape(char *dst, size_t cap, const char *s) {
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { dst[n++] = '\\'; dst[n++] = (char)c; }
        else if (c < 0x20) n += (size_t)snprintf(dst + n, cap - n, "\\u%04x", c);
        else dst[n++] = (char)c;
    }
    dst[n] = 0;
    return n;
}

void log_msg(int level, const char *fmt, ...) {
    if (level > g_level) return;
    static const char lv[] = "EWID";
    char msg[1024], line[2200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    int n;
    if (g_json) {
        char esc[2100];
        json_escape(esc, sizeof esc, msg);
        n = snprintf(line, sizeof line,
                     "{\"pid\":%d,\"role\":\"%s\",\"time\":\"%02d:%02d:%02d.%03ld\",\"level\":\"%c\",\"msg\":\"%s\"}\n",
                     (int)getpid(), g_role, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     lv[level & 3], esc);
    } else {
        n = snprintf(line, sizeof line, "%d:%s %02d:%02d:%02d.%03ld %c %s\n", (int)getpid(), g_role,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, lv[level & 3], msg);
    }
    if (n > (int)sizeof line - 1) { n = (int)sizeof line - 1; line[n - 1] = '\n'; }
    ssize_t w = write(2, line, (size_t)n);
    (void)w;
}
