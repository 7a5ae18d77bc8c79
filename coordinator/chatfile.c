/* chatfile: see chatfile.h. jansson reads and writes the JSON (its parser bounds the nesting);
 * this file checks the shape and turns messages into chat_msg_t and back. */
#include "coordinator/chatfile.h"
#include "core/err.h"
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void chatfile_msgs_free(chat_msg_t *msgs, int n_msgs) {
    for (int i = 0; msgs && i < n_msgs; i++) free((char *)msgs[i].content);
    free(msgs);
}

void chatfile_think_free(char **think, int n) {
    for (int i = 0; think && i < n; i++) free(think[i]);
    free(think);
}

/* message o's "reasoning_content" (role r) into *out (malloc'd; NULL: none). 0, TERN_EFORMAT
 * (*why says what is wrong) or TERN_ENOMEM. */
static int think_text(json_t *o, const char *r, char **out, const char **why) {
    json_t *v = json_object_get(o, "reasoning_content");
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) { *why = "'reasoning_content' is not a string"; return TERN_EFORMAT; }
    if (strcmp(r, "assistant")) { *why = "'reasoning_content' on a message that is not the assistant's"; return TERN_EFORMAT; }
    return (*out = strdup(json_string_value(v))) ? 0 : TERN_ENOMEM;
}

/* the role's literal, or NULL when it is none of those a conversation file holds */
static const char *role_literal(const char *r) {
    static const char *const roles[] = {"system", "user", "assistant"};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (!strcmp(r, roles[i])) return roles[i];
    return NULL;
}

/* content: a string, null (""), or text parts joined as the server joins them
 * (server_req.c); *out malloc'd. 0, TERN_EFORMAT (what is wrong in why), TERN_ENOMEM. */
static int content_text(json_t *c, char **out, const char **why) {
    *out = NULL;
    if (!c || json_is_null(c)) return (*out = strdup("")) ? 0 : TERN_ENOMEM;
    if (json_is_string(c)) {
        size_t n = json_string_length(c);
        if (!(*out = malloc(n + 1))) return TERN_ENOMEM;
        memcpy(*out, json_string_value(c), n + 1);
        return 0;
    }
    static const char bad[] = "'content' is not a string, null or an array of {\"type\": \"text\", \"text\": ...} parts";
    size_t len;
    int rc = chatfile_join_parts(c, out, &len);
    *why = rc == TERN_EFORMAT ? bad : NULL;
    return rc;
}

int chatfile_join_parts(const void *content, char **out, size_t *len) {
    json_t *c = (json_t *)content;
    *out = NULL;
    if (!json_is_array(c)) return TERN_EFORMAT;
    size_t i, total = 1;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") != 0 ||
            !json_is_string(text))
            return TERN_EFORMAT;
        total += json_string_length(text);
    }
    if (!(*out = malloc(total))) return TERN_ENOMEM;
    size_t at = 0;
    json_array_foreach(c, i, part) {
        json_t *text = json_object_get(part, "text");
        memcpy(*out + at, json_string_value(text), json_string_length(text));
        at += json_string_length(text);
    }
    (*out)[at] = 0;
    *len = at;
    return 0;
}

int chatfile_parse(const char *text, size_t len, chat_msg_t **msgs, int *n_msgs, char *err, size_t errlen) {
    return chatfile_parse_ex(text, len, msgs, NULL, n_msgs, err, errlen);
}

int chatfile_parse_ex(const char *text, size_t len, chat_msg_t **msgs, char ***think, int *n_msgs, char *err,
                      size_t errlen) {
    *msgs = NULL;
    *n_msgs = 0;
    if (think) *think = NULL;
    if (len > (size_t)CHATFILE_MAX_BYTES)
        return err_set(err, errlen, TERN_EFORMAT, "%zu bytes (a conversation file has at most %ld)", len, CHATFILE_MAX_BYTES);
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);   /* no \u0000: a content is a C string */
    if (!root) {
        err_set(err, errlen, TERN_EFORMAT, "not JSON (line %d, column %d: %s)", je.line, je.column, je.text);
        for (char *p = err; p && *p; p++)   /* jansson quotes the bytes near the error: one line still */
            if ((unsigned char)*p < 0x20) *p = ' ';
        return TERN_EFORMAT;
    }
    json_t *arr = json_object_get(root, "messages");
    int rc = 0;
    if (!json_is_array(arr)) {
        rc = err_set(err, errlen, TERN_EFORMAT, "not a conversation: no \"messages\" array in a top-level object");
        goto done;
    }
    size_t n = json_array_size(arr);
    if (n > CHATFILE_MAX_MSGS) {
        rc = err_set(err, errlen, TERN_EFORMAT, "%zu messages (at most %d)", n, CHATFILE_MAX_MSGS);
        goto done;
    }
    chat_msg_t *m = calloc(n ? n : 1, sizeof *m);
    char **th = calloc(n ? n : 1, sizeof *th);
    if (!m || !th) { free(m); free(th); rc = err_set(err, errlen, TERN_ENOMEM, "out of memory"); goto done; }
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *o = json_array_get(arr, i), *role = json_object_get(o, "role");
        const char *why = NULL, *r = json_is_string(role) ? role_literal(json_string_value(role)) : NULL;
        if (!json_is_object(o)) why = "not an object";
        else if (!json_is_string(role)) why = "no \"role\" string";
        else if (!r) why = "a role other than system, user or assistant";
        else if (i > 0 && !strcmp(r, "system")) why = "a system message after the first";
        char *content = NULL, *th_i = NULL;
        if (!why) rc = content_text(json_object_get(o, "content"), &content, &why);
        if (rc == 0 && !why) rc = think_text(o, r, &th_i, &why);
        if (rc == TERN_ENOMEM) err_set(err, errlen, rc, "out of memory");
        else if (why) rc = err_set(err, errlen, TERN_EFORMAT, "message %zu: %s", i + 1, why);
        if (rc < 0) { free(content); free(th_i); break; }
        m[i].role = r;
        m[i].content = content;
        th[i] = th_i;
        *n_msgs = (int)i + 1;
    }
    if (rc < 0) {
        chatfile_msgs_free(m, *n_msgs);
        chatfile_think_free(th, *n_msgs);
        *n_msgs = 0;
    } else {
        *msgs = m;
        if (think) *think = th;
        else chatfile_think_free(th, *n_msgs);
    }
done:
    json_decref(root);
    return rc;
}

/* bytes of the well-formed UTF-8 character at s[0..n) (1-4; shortest form, no surrogates, at most
 * U+10FFFF), or 0 when there is none */
static int utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int k = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!k || (size_t)k > n) return 0;
    for (int i = 1; i < k; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) || (c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
        return 0;
    return k;
}

/* s as a JSON string, each byte that does not begin a UTF-8 character replaced by U+FFFD (counted
 * in *n_bad) */
static json_t *json_text(const char *s, int *n_bad) {
    size_t n = strlen(s), at = 0;
    char *t = malloc(3 * n + 1);   /* a byte becomes at most 3 */
    if (!t) return NULL;
    for (size_t i = 0; i < n;) {
        int k = utf8_len((const unsigned char *)s + i, n - i);
        if (k) memcpy(t + at, s + i, (size_t)k), at += (size_t)k, i += (size_t)k;
        else memcpy(t + at, "\xEF\xBF\xBD", 3), at += 3, i++, ++*n_bad;
    }
    json_t *j = json_stringn(t, at);
    free(t);
    return j;
}

char *chatfile_dump(const chat_msg_t *msgs, int n_msgs, int *n_bad) {
    return chatfile_dump_ex(msgs, NULL, n_msgs, n_bad);
}

char *chatfile_dump_ex(const chat_msg_t *msgs, char *const *think, int n_msgs, int *n_bad) {
    *n_bad = 0;
    json_t *arr = json_array(), *root = arr ? json_pack("{s:o}", "messages", arr) : NULL;
    if (!root) return NULL;
    for (int i = 0; i < n_msgs; i++) {
        json_t *o = json_pack("{s:s, s:o}", "role", msgs[i].role, "content", json_text(msgs[i].content, n_bad));
        if (o && think && think[i] && json_object_set_new(o, "reasoning_content", json_text(think[i], n_bad)) < 0) {
            json_decref(o);
            o = NULL;
        }
        if (!o || json_array_append_new(arr, o)) { json_decref(root); return NULL; }
    }
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (!text) return NULL;
    size_t n = strlen(text);
    char *out = realloc(text, n + 2);
    if (!out) { free(text); return NULL; }
    memcpy(out + n, "\n", 2);
    return out;
}

int chatfile_save(const char *path, const chat_msg_t *msgs, int n_msgs, int *n_bad, char *err, size_t errlen) {
    return chatfile_save_ex(path, msgs, NULL, n_msgs, n_bad, err, errlen);
}

int chatfile_save_ex(const char *path, const chat_msg_t *msgs, char *const *think, int n_msgs, int *n_bad, char *err,
                     size_t errlen) {
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return err_set(err, errlen, TERN_EINVAL, "%s: path too long", path);
    char *text = chatfile_dump_ex(msgs, think, n_msgs, n_bad);
    if (!text) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    size_t n = strlen(text);
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(text, 1, n, f) == n;
    ok = f && fclose(f) == 0 && ok;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        if (f) remove(tmp);
        return err_set(err, errlen, TERN_EIO, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}
