/* log: one line per event, `pid:ROLE time level message` on stderr.
 * Roles: "C" coordinator, "W3" worker rank 3, "T" tools. Levels E W I D; -v turns on D.
 * --log-format json writes one JSON object per line instead. Thread-safe (one write()). */
#ifndef TERN_LOG_H
#define TERN_LOG_H

enum log_level { LOG_E = 0, LOG_W = 1, LOG_I = 2, LOG_D = 3 };

void log_set_role(const char *role);   /* copied; at most 15 chars */
void log_set_level(int level);         /* messages above it are dropped; default LOG_I */
int log_get_level(void);
void log_set_json(int on);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_e(...) log_msg(LOG_E, __VA_ARGS__)
#define log_w(...) log_msg(LOG_W, __VA_ARGS__)
#define log_i(...) log_msg(LOG_I, __VA_ARGS__)
#define log_d(...) do { if (log_get_level() >= LOG_D) log_msg(LOG_D, __VA_ARGS__); } while (0)

#endif
