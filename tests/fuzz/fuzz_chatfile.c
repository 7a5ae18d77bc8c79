/* fuzz_chatfile: libFuzzer target for the conversation file reader (coordinator/chatfile.c, what
 * `tern chat` reads with /load and --chat-file). Any input must give either messages with a known
 * role literal, a string content, a system message only first and a thinking (reasoning_content)
 * only on assistant messages — which then dump to JSON that parses back to the same messages and
 * thinking (every text here is UTF-8: jansson checked it) — or a one-line error; never a crash,
 * leak or hang. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "coordinator/chatfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    chat_msg_t *m, *m2;
    char **t, **t2;
    int n, n2, n_bad;
    char err[400];
    err[0] = 0;
    if (chatfile_parse_ex((const char *)data, size, &m, &t, &n, err, sizeof err) < 0) {
        if (m || t || n || !err[0] || strchr(err, '\n')) abort();
        return 0;
    }
    if (n < 0 || n > CHATFILE_MAX_MSGS || !m || !t) abort();
    for (int i = 0; i < n; i++) {
        if (!m[i].content) abort();
        if (strcmp(m[i].role, "user") && strcmp(m[i].role, "assistant") && (strcmp(m[i].role, "system") || i > 0)) abort();
        if (t[i] && strcmp(m[i].role, "assistant")) abort();
    }
    char *text = chatfile_dump_ex(m, t, n, &n_bad);
    if (!text) abort();
    if (n_bad || chatfile_parse_ex(text, strlen(text), &m2, &t2, &n2, err, sizeof err) < 0 || n2 != n) abort();
    for (int i = 0; i < n; i++)
        if (m2[i].role != m[i].role || strcmp(m2[i].content, m[i].content) || !t[i] != !t2[i] ||
            (t[i] && strcmp(t[i], t2[i])))
            abort();
    free(text);
    chatfile_msgs_free(m2, n2);
    chatfile_think_free(t2, n2);
    chatfile_msgs_free(m, n);
    chatfile_think_free(t, n);
    return 0;
}
