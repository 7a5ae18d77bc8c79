/* toolstream: see toolstream.h. A state machine over the text fed so far: each step decides the
 * bytes from s->pos on, or waits for more where they could still turn out either way (a marker's
 * first bytes, a JSON token not yet closed); decisions depend on the bytes only, never on where
 * the chunks end, so any split gives the same message. Every step consumes text, or moves to a
 * state that does; toolstream_feed bounds the steps by the text's size besides. */
#define _GNU_SOURCE   /* memmem */
#include "coordinator/toolstream.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

enum {
    ST_START, ST_TEXT, ST_TAIL, ST_DONE,          /* before anything; content; content only; ignored */
    ST_H_CLOSE,                                   /* hermes: </tool_call> after a call */
    ST_L_OPEN, ST_L_NEXT,                         /* a list of calls: '[', then ',' or ']' */
    ST_G_OPEN, ST_G_KEY, ST_G_COLON, ST_G_RESP, ST_G_STR, ST_G_END,   /* generic's reply object */
    ST_C_OPEN, ST_C_KEY, ST_C_COLON, ST_C_VAL, ST_ARGS, ST_C_NEXT,   /* a call object */
};
enum { K_OTHER, K_NAME, K_ARGS, K_ID, K_TYPE, K_CALL, K_CALLS, K_RESP };
enum { NEED = 0, OK = 1, BAD = -1 };

static const char HOPEN[] = "<tool_call>", HCLOSE[] = "</tool_call>", MTAG[] = "[TOOL_CALLS]", PYTAG[] = "<|python_tag|>";

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

void toolstream_init(toolstream_t *s, int fmt) {
    memset(s, 0, sizeof *s);
    s->fmt = fmt >= TOOLFMT_GENERIC && fmt <= TOOLFMT_MISTRAL ? fmt : TOOLFMT_GENERIC;
}

void toolstream_free(toolstream_t *s) {
    strbuf_free(&s->text);
    strbuf_free(&s->content);
    strbuf_free(&s->pend);
    for (int i = 0; i < s->n_calls; i++) strbuf_free(&s->calls[i].args);
    memset(s, 0, sizeof *s);
}

size_t toolstream_ready(const toolstream_t *s, const strbuf_t *b, size_t from) {
    size_t n = b->n;
    if (s->final || n <= from) return n > from ? n - from : 0;
    /* an incomplete UTF-8 sequence at the end waits for its last bytes */
    for (size_t k = 1; k <= 3 && k <= n - from; k++) {
        unsigned char c = (unsigned char)b->p[n - k];
        if ((c & 0xC0) == 0x80) continue;
        size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return len > k ? n - k - from : n - from;
    }
    return n - from;
}

/* text p[0..n) as content: whitespace at its end waits (a call may follow, and takes it) */
static void content(toolstream_t *s, const char *p, size_t n) {
    if (s->drop_ws) {
        while (n && is_ws(*p)) { p++; n--; }
        if (!n) return;
        s->drop_ws = 0;
    }
    size_t last = n;
    while (last && is_ws(p[last - 1])) last--;
    if (last) {
        strbuf_add(&s->content, s->pend.p ? s->pend.p : "", s->pend.n);
        strbuf_add(&s->content, p, last);
        strbuf_free(&s->pend);
    }
    strbuf_add(&s->pend, p + last, n - last);
}

/* text at pos against literal lit: OK (consumed), NEED (a prefix of it ends the text), BAD */
static int lit(toolstream_t *s, const char *l) {
    size_t ln = strlen(l), have = s->text.n - s->pos;
    size_t k = have < ln ? have : ln;
    if (memcmp(s->text.p + s->pos, l, k)) return BAD;
    if (k < ln) return NEED;
    s->pos += ln;
    return OK;
}

/* skips whitespace; the next byte, or -1 when the text ends first */
static int peek(toolstream_t *s) {
    while (s->pos < s->text.n && is_ws(s->text.p[s->pos])) s->pos++;
    return s->pos < s->text.n ? (unsigned char)s->text.p[s->pos] : -1;
}

/* the end of the JSON string token at pos (past its quote), or 0 (NEED) / (size_t)-1 (BAD) */
static size_t str_end(const toolstream_t *s) {
    const char *t = s->text.p;
    for (size_t i = s->pos + 1; i < s->text.n; i++) {
        if (t[i] == '"') return i + 1;
        if ((unsigned char)t[i] < 0x20) return (size_t)-1;
        if (t[i] == '\\') i++;
    }
    return 0;
}

/* the string token at pos decoded (malloc'd, NUL-terminated, *len) → OK, NEED or BAD */
static int str_tok(toolstream_t *s, char **out, size_t *len) {
    if (s->pos >= s->text.n) return NEED;
    if (s->text.p[s->pos] != '"') return BAD;
    size_t e = str_end(s);
    if (e == 0) return NEED;
    if (e == (size_t)-1) return BAD;
    json_t *v = json_loadb(s->text.p + s->pos, e - s->pos, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    *out = json_is_string(v) ? malloc(json_string_length(v) + 1) : NULL;
    if (*out) {
        *len = json_string_length(v);
        memcpy(*out, json_string_value(v), *len + 1);
    }
    json_decref(v);
    if (!*out) return BAD;
    s->pos = e;
    return OK;
}

/* skips the JSON value at pos (checked only for its shape: strings and brackets) */
static int skip_value(toolstream_t *s) {
    const char *t = s->text.p;
    size_t i = s->pos, n = s->text.n;
    int depth = 0;
    if (i >= n) return NEED;
    if (t[i] != '{' && t[i] != '[' && t[i] != '"') {   /* a number or literal: up to its end */
        while (i < n && t[i] && strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.", t[i])) i++;
        if (i == s->pos) return BAD;
        if (i == n) return NEED;
        s->pos = i;
        return OK;
    }
    for (; i < n; i++) {
        if (t[i] == '"') {
            size_t save = s->pos;
            s->pos = i;
            size_t e = str_end(s);
            s->pos = save;
            if (e == 0) return NEED;
            if (e == (size_t)-1) return BAD;
            i = e - 1;
        } else if (t[i] == '{' || t[i] == '[') {
            depth++;
        } else if (t[i] == '}' || t[i] == ']') {
            depth--;
        }
        if (depth <= 0) { s->pos = i + 1; return OK; }
    }
    return NEED;
}

static int name_ok(const char *p, size_t n) {
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!p[i] || !strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", p[i])) return 0;
    return 1;
}

static int text_state(const toolstream_t *s) {
    return s->fmt == TOOLFMT_HERMES || s->fmt == TOOLFMT_MISTRAL ? ST_TEXT : ST_TAIL;
}

/* the calls read since open_at do not hold: with none committed their text is content (after
 * an explicit marker, the marker alone, and reading goes on); else the rest from pos is. At the
 * end of the text a committed call is kept as cut short and nothing after it counts. */
static void brk(toolstream_t *s) {
    if (s->n_calls > s->n_committed) strbuf_free(&s->calls[--s->n_calls].args);
    if (s->commits == 0) {
        size_t m = s->fmt == TOOLFMT_HERMES ? sizeof HOPEN - 1 : s->fmt == TOOLFMT_MISTRAL ? sizeof MTAG - 1 : 0;
        const char *t = s->text.p + s->open_at;
        if (m && s->text.n - s->open_at >= m && !memcmp(t, s->fmt == TOOLFMT_HERMES ? HOPEN : MTAG, m)) {
            content(s, t, m);
            s->pos = s->open_at + m;
        } else {
            s->pos = s->open_at;
        }
        s->st = text_state(s);
        return;
    }
    if (s->final) {
        s->incomplete = s->st != ST_H_CLOSE && s->st != ST_G_END && s->st != ST_L_NEXT;
        s->st = ST_DONE;
        return;
    }
    s->st = text_state(s);
}

static void commit(toolstream_t *s, toolstream_call_t *c) {
    strbuf_free(&s->pend);   /* the whitespace before a call is not content */
    if (!s->n_committed) s->content_before = s->content.n;
    c->committed = 1;
    s->n_committed++;
    s->commits++;
}

/* where the calls begin (open_at: their text if they fail); next the state that reads them */
static void open_calls(toolstream_t *s, size_t at, int next) {
    s->open_at = at;
    s->commits = 0;
    s->st = next;
}

/* the calls (a list or one) are read: whitespace after them opens no content (between two
 * pieces of text it stays, as the whitespace before the calls does not) */
static void calls_done(toolstream_t *s, int next) {
    s->drop_ws = s->content.n == 0;
    s->st = next;
}

/* ST_START: the reply's first bytes decide whether it opens with calls */
static int step_start(toolstream_t *s) {
    size_t at = s->pos;
    int c = peek(s);
    if (c < 0) { s->pos = at; return NEED; }
    if (s->fmt == TOOLFMT_LLAMA3) {
        int r = lit(s, PYTAG);
        if (r == NEED) { s->pos = at; return NEED; }
        c = peek(s);
        if (c < 0) { s->pos = at; return NEED; }
    }
    if (s->fmt == TOOLFMT_MISTRAL && c == '[' && s->pos + 1 >= s->text.n) { s->pos = at; return NEED; }
    int opens = s->fmt == TOOLFMT_MISTRAL ? c == '[' && s->text.p[s->pos + 1] == '{' : c == '{' && s->fmt != TOOLFMT_HERMES;
    if (!opens) { s->pos = at; s->st = text_state(s); return OK; }
    if (s->fmt == TOOLFMT_MISTRAL) content(s, s->text.p + at, s->pos - at);   /* whitespace: waits */
    open_calls(s, s->fmt == TOOLFMT_MISTRAL ? s->pos : at, s->fmt == TOOLFMT_GENERIC ? ST_G_OPEN
                                                           : s->fmt == TOOLFMT_MISTRAL ? ST_L_OPEN : ST_C_OPEN);
    s->cont = s->fmt == TOOLFMT_LLAMA3 ? ST_TAIL : 0;
    return OK;
}

/* ST_TEXT: content up to the format's marker (hermes, mistral); a marker's first bytes wait */
static int step_text(toolstream_t *s) {
    const char *m = s->fmt == TOOLFMT_HERMES ? HOPEN : MTAG, *t = s->text.p + s->pos;
    size_t ml = strlen(m), have = s->text.n - s->pos;
    if (s->n_calls >= TOOLFMT_MAX_CALLS) { s->st = ST_TAIL; return OK; }
    const char *q = memmem(t, have, m, ml);
    if (q) {
        content(s, t, (size_t)(q - t));
        s->pos += (size_t)(q - t) + ml;
        open_calls(s, s->pos - ml, s->fmt == TOOLFMT_HERMES ? ST_C_OPEN : ST_L_OPEN);
        s->cont = s->fmt == TOOLFMT_HERMES ? ST_H_CLOSE : 0;
        return OK;
    }
    size_t keep = 0;   /* the longest end of the text that begins the marker */
    for (size_t k = ml - 1 < have ? ml - 1 : have; k > 0 && !s->final; k--)
        if (!memcmp(t + have - k, m, k)) { keep = k; break; }
    if (have == keep) return NEED;
    content(s, t, have - keep);
    s->pos += have - keep;
    return keep ? NEED : OK;
}

/* a call object's key at pos (ST_C_KEY) */
static int step_key(toolstream_t *s) {
    int c = peek(s);
    if (c < 0) return NEED;
    if (c == '}') return -2;   /* the call's end */
    char *k = NULL;
    size_t kl;
    int r = str_tok(s, &k, &kl);
    if (r != OK) return r;
    toolstream_call_t *cl = &s->calls[s->n_calls - 1];
    s->key = !strcmp(k, "name") && !cl->name[0] ? K_NAME
             : (!strcmp(k, "arguments") || (s->fmt == TOOLFMT_LLAMA3 && !strcmp(k, "parameters"))) && !cl->has_args ? K_ARGS
             : !strcmp(k, "id") && s->fmt == TOOLFMT_MISTRAL && !cl->id[0] ? K_ID
             : !strcmp(k, "type") && s->fmt == TOOLFMT_LLAMA3 ? K_TYPE : K_OTHER;
    free(k);
    s->st = ST_C_COLON;
    return OK;
}

/* a call object's value (ST_C_VAL) */
static int step_val(toolstream_t *s) {
    toolstream_call_t *cl = &s->calls[s->n_calls - 1];
    int c = peek(s);
    if (c < 0) return NEED;
    if (s->key == K_OTHER) { int r = skip_value(s); if (r == OK) s->st = ST_C_NEXT; return r; }
    if (s->key == K_ARGS && c == '{') {
        cl->has_args = 1;
        s->adepth = s->astr = s->aesc = 0;
        s->st = ST_ARGS;
        return OK;
    }
    char *v = NULL;
    size_t vl = 0;
    int r = str_tok(s, &v, &vl);
    if (r != OK) return r;
    if (s->key == K_NAME && name_ok(v, vl)) {
        memcpy(cl->name, v, vl + 1);
        if (s->fmt != TOOLFMT_MISTRAL) commit(s, cl);
    } else if (s->key == K_ID && vl <= 256 && strlen(v) == vl) {
        memcpy(cl->id, v, vl + 1);
        if (cl->name[0]) commit(s, cl);
    } else if (s->key == K_ARGS) {   /* arguments given as a JSON text */
        cl->has_args = 1;
        strbuf_add(&cl->args, v, vl);
    } else if (s->key != K_ID && !(s->key == K_TYPE && !strcmp(v, "function"))) {
        free(v);
        return BAD;
    }
    free(v);
    s->st = ST_C_NEXT;
    return OK;
}

/* ST_ARGS: the arguments object byte by byte, whitespace outside strings left out */
static int step_args(toolstream_t *s) {
    toolstream_call_t *cl = &s->calls[s->n_calls - 1];
    const char *t = s->text.p;
    size_t i = s->pos, from = i;
    while (i < s->text.n) {
        char ch = t[i++];
        if (s->astr) {
            if (s->aesc) s->aesc = 0;
            else if (ch == '\\') s->aesc = 1;
            else if (ch == '"') s->astr = 0;
        } else if (ch == '"') {
            s->astr = 1;
        } else if (ch == '{' || ch == '[') {
            s->adepth++;
        } else if (ch == '}' || ch == ']') {
            s->adepth--;
        } else if (is_ws(ch)) {
            strbuf_add(&cl->args, t + from, i - 1 - from);
            from = i;
            continue;
        }
        if (!s->astr && s->adepth == 0) { s->st = ST_C_NEXT; break; }
    }
    strbuf_add(&cl->args, t + from, i - from);
    s->pos = i;
    return s->st == ST_C_NEXT ? OK : NEED;
}

/* ST_G_STR: generic's {"response": ...} string decoded into content as it comes, whitespace and
 * all: runs of plain bytes at once, each escape once it is whole (a surrogate pair together) */
static int step_resp(toolstream_t *s) {
    const char *t = s->text.p;
    size_t i = s->pos, n = s->text.n;
    while (i < n) {
        unsigned char ch = (unsigned char)t[i];
        if (ch == '"') {
            s->pos = i + 1;
            s->response = 1;
            s->st = ST_G_END;
            return OK;
        }
        if (ch < 0x20) return BAD;
        if (ch != '\\') {
            size_t j = i;
            while (j < n && t[j] != '"' && t[j] != '\\' && (unsigned char)t[j] >= 0x20) j++;
            strbuf_add(&s->content, t + i, j - i);
            s->pos = i = j;
            continue;
        }
        size_t len = i + 1 < n && t[i + 1] == 'u' ? 6 : 2;
        char hex[5] = {0}, buf[16];
        if (len == 6 && n - i >= 6) {
            memcpy(hex, t + i + 2, 4);
            long u = strtol(hex, NULL, 16);
            if (u >= 0xD800 && u <= 0xDBFF) len = 12;   /* a high surrogate: its pair comes with it */
        }
        if (n - i < len) return NEED;
        buf[0] = '"';
        memcpy(buf + 1, t + i, len);
        buf[len + 1] = '"';
        json_t *v = json_loadb(buf, len + 2, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (!json_is_string(v)) { json_decref(v); return BAD; }
        strbuf_add(&s->content, json_string_value(v), json_string_length(v));
        json_decref(v);
        s->pos = i += len;
    }
    return NEED;
}

/* the end of a call object: it needs a name; a call without arguments has {} */
static int call_end(toolstream_t *s) {
    toolstream_call_t *cl = &s->calls[s->n_calls - 1];
    if (!cl->name[0]) return BAD;
    if (!cl->has_args) { cl->has_args = 1; strbuf_puts(&cl->args, "{}"); }
    if (!cl->committed) commit(s, cl);
    s->pos++;
    s->st = s->cont ? s->cont : ST_L_NEXT;
    if (s->st == ST_TAIL) calls_done(s, ST_TAIL);
    return OK;
}

/* one step of the reader: OK (went on), NEED (waits for text), BAD (handled by brk) */
static int step(toolstream_t *s) {
    int c, r;
    switch (s->st) {
    case ST_START: return step_start(s);
    case ST_TEXT: return step_text(s);
    case ST_TAIL:
        content(s, s->text.p + s->pos, s->text.n - s->pos);
        s->pos = s->text.n;
        return NEED;
    case ST_DONE: s->pos = s->text.n; return NEED;
    case ST_H_CLOSE:
        if (peek(s) < 0) return NEED;
        r = lit(s, HCLOSE);
        if (r == NEED) return NEED;
        calls_done(s, ST_TEXT);   /* no close: what follows is content */
        return OK;
    case ST_L_OPEN:
        if ((c = peek(s)) < 0) return NEED;
        if (c != '[') return BAD;
        s->pos++;
        s->st = ST_C_OPEN;
        s->cont = 0;
        return OK;
    case ST_L_NEXT:
        if ((c = peek(s)) < 0) return NEED;
        if (c == ',') { s->pos++; s->st = ST_C_OPEN; return OK; }
        if (c != ']') return BAD;
        s->pos++;
        calls_done(s, s->fmt == TOOLFMT_GENERIC ? ST_G_END : ST_TEXT);
        return OK;
    case ST_G_OPEN:
        if ((c = peek(s)) != '{') return c < 0 ? NEED : BAD;
        s->pos++;
        s->st = ST_G_KEY;
        return OK;
    case ST_G_KEY: {
        char *k = NULL;
        size_t kl;
        if (peek(s) < 0) return NEED;
        if ((r = str_tok(s, &k, &kl)) != OK) return r;
        s->key = !strcmp(k, "tool_call") ? K_CALL : !strcmp(k, "tool_calls") ? K_CALLS : !strcmp(k, "response") ? K_RESP : K_OTHER;
        free(k);
        if (s->key == K_OTHER) return BAD;
        s->st = ST_G_COLON;
        return OK;
    }
    case ST_G_COLON:
    case ST_C_COLON:
        if ((c = peek(s)) != ':') return c < 0 ? NEED : BAD;
        s->pos++;
        if (s->st == ST_C_COLON) s->st = ST_C_VAL;
        else s->st = s->key == K_CALL ? ST_C_OPEN : s->key == K_CALLS ? ST_L_OPEN : ST_G_RESP;
        s->cont = s->key == K_CALL ? ST_G_END : s->st == ST_C_VAL ? s->cont : 0;
        return OK;
    case ST_G_RESP:
        if ((c = peek(s)) != '"') return c < 0 ? NEED : BAD;
        s->pos++;
        s->commits = 1;   /* decided: nothing of the object is content */
        s->st = ST_G_STR;
        return OK;
    case ST_G_STR: return step_resp(s);
    case ST_G_END:
        if ((c = peek(s)) < 0) return NEED;
        if (c != '}') return BAD;
        s->st = ST_DONE;
        return OK;
    case ST_C_OPEN:
        if ((c = peek(s)) < 0) return NEED;
        if (c != '{' || s->n_calls >= TOOLFMT_MAX_CALLS) return BAD;
        s->pos++;
        memset(&s->calls[s->n_calls++], 0, sizeof s->calls[0]);
        s->st = ST_C_KEY;
        return OK;
    case ST_C_KEY:
        r = step_key(s);
        return r == -2 ? call_end(s) : r;
    case ST_C_VAL: return step_val(s);
    case ST_ARGS: return step_args(s);
    case ST_C_NEXT:
        if ((c = peek(s)) < 0) return NEED;
        if (c == ',') { s->pos++; s->st = ST_C_KEY; return OK; }
        return c == '}' ? call_end(s) : BAD;
    }
    return BAD;
}

/* runs the reader as far as the text allows; once finished, what waits is decided */
static void run(toolstream_t *s) {
    /* every step consumes text or moves to a state that does: a bound that cannot bite on a
     * working reader, against a loop on input nobody thought of */
    for (size_t guard = 8 * (s->text.n + 16); guard; guard--) {
        int r = step(s);
        if (r == OK) continue;
        if (r == NEED) {
            if (!s->final) return;
            if (s->st == ST_TEXT || s->st == ST_TAIL || s->st == ST_DONE) return;   /* all read */
            if (s->st == ST_START) { s->st = ST_TAIL; continue; }   /* whitespace, a tag's start */
        }
        brk(s);   /* bad text, or the text ends inside a token or marker */
    }
    s->st = ST_DONE;
}

int toolstream_feed(toolstream_t *s, const char *p, size_t n) {
    if (s->final || !n) return 0;
    if (strbuf_add(&s->text, p, n) < 0) return -1;
    run(s);
    return s->content.err || s->pend.err ? -1 : 0;
}

int toolstream_finish(toolstream_t *s) {
    if (s->final) return 0;
    s->final = 1;
    if (s->text.p) run(s);
    if (!s->n_committed && s->pend.n) strbuf_add(&s->content, s->pend.p, s->pend.n);   /* no call: as it came */
    strbuf_free(&s->pend);
    for (int i = 0; i < s->n_calls; i++)
        if (s->calls[i].args.err) return -1;
    return s->content.err ? -1 : 0;
}
