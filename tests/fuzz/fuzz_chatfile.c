/* fuzz_chatfile: libFuzzer target for the conversation file reader (coordinator/chatfile.c, what
 * `tern chat` reads with /load and --chat-file). Any input must give either messages with a known
 * role literal, a string content and a system message only first — which then dump to JSON that
 * parses back to the same messages (every content here is UTF-8: jansson checked it) — or a
 * one-line error; never a crash, leak or hang. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "coordinator/chatfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    chat_msg_t *m, *m2;
    int n, n2, n_bad;
    char err[400];
    err[0] = 0;
    if (chatfile_parse((const char *)data, size, &m, &n, err, sizeof err) < 0) {
        if (m || n || !err[0] || strchr(err, '\n')) abort();
        return 0;
    }
    if (n < 0 || n > CHATFILE_MAX_MSGS || !m) abort();
    for (int i = 0; i < n; i++) {
        if (!m[i].content) abort();
        if (strcmp(m[i].role, "user") && strcmp(m[i].role, "assistant") && (strcmp(m[i].role, "system") || i > 0)) abort();
    }
    char *text = chatfile_dump(m, n, &n_bad);
    if (!text) abort();
    if (n_bad || chatfile_parse(text, strlen(text), &m2, &n2, err, sizeof err) < 0 || n2 != n) abort();
    for (int i = 0; i < n; i++)
        if (m2[i].role != m[i].role || strcmp(m2[i].content, m[i].content)) abort();
    free(text);
    chatfile_msgs_free(m2, n2);
    chatfile_msgs_free(m, n);
    return 0;
}
