/* chat: formats a conversation with the model's chat template. By default the template text
 * (tokenizer.chat_template) is matched to a known family by marker strings, as llama.cpp's
 * llm_chat_detect_template does; each family is formatted by hand, and an unknown template falls
 * back to llama3 (when <|start_header_id|> is a token) or chatml. With chat_template_set(jinja)
 * the template itself is rendered by coordinator/jinja.c, as llama.cpp's --jinja. Not here: the
 * templates' native tool-call output formats (the server keeps its generic JSON format). */
#include "coordinator/tokenizer.h"
#include "coordinator/tokenizer_impl.h"
#include "coordinator/jinja.h"
#include "coordinator/toolfmt.h"
#include "core/err.h"
#include "core/log.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char g_chat_err[256];

const char *chat_error(void) { return g_chat_err; }

static const char *const FAMILY_NAMES[] = {
    [CHAT_NONE] = "none", [CHAT_LLAMA3] = "llama3", [CHAT_BITNET] = "bitnet", [CHAT_FALCON3] = "falcon3",
    [CHAT_CHATML] = "chatml", [CHAT_LLAMA2] = "llama2", [CHAT_LLAMA2_SYS] = "llama2-sys", [CHAT_PHI3] = "phi3",
};

/* family from the template text; CHAT_NONE when no marker matches */
static int detect(const char *tmpl) {
    for (int f = CHAT_LLAMA3; f <= CHAT_PHI3; f++)   /* a bare family name is accepted too */
        if (!strcmp(tmpl, FAMILY_NAMES[f])) return f;
#define HAS(s) (strstr(tmpl, s) != NULL)
    if (HAS("<|im_start|>")) return CHAT_CHATML;
    if (HAS("[INST]")) return HAS("<<SYS>>") ? CHAT_LLAMA2_SYS : CHAT_LLAMA2;
    if (HAS("<|assistant|>") && HAS("<|end|>")) return CHAT_PHI3;
    if (HAS("<|assistant|>") && HAS("<|user|>")) return CHAT_FALCON3;
    if (HAS("<|start_header_id|>") && HAS("<|end_header_id|>")) return CHAT_LLAMA3;
    if (HAS("<|eot_id|>") && (HAS("Assistant: ") || HAS("capitalize"))) return CHAT_BITNET;
#undef HAS
    return CHAT_NONE;
}

int chat_init(struct tokenizer *t, const gguf_t *g, char *err, size_t errlen) {
    const gguf_kv_t *kv = gguf_find(g, "tokenizer.chat_template");
    if (kv && kv->type == GGUF_STR) {
        t->chat_template = malloc(kv->v.s.len + 1);
        if (!t->chat_template) return err_set(err, errlen, TERN_ENOMEM, "tokenizer: out of memory for chat template");
        memcpy(t->chat_template, kv->v.s.ptr, kv->v.s.len);
        t->chat_template[kv->v.s.len] = 0;
        t->chat_family = detect(t->chat_template);
        t->thinks = strstr(t->chat_template, "<think>") != NULL;
    }
    if (t->chat_family != CHAT_NONE) return 0;
    char arch[64] = "";
    gguf_get_str(g, "general.architecture", arch, sizeof arch);
    int has_eot_id = tokenizer_find(t, "<|eot_id|>") >= 0;
    /* BitNet b1.58 2B-4T files often carry no template: its "Role: text<|eot_id|>" format */
    if ((!strcmp(arch, "bitnet-b1.58") || !strcmp(arch, "bitnet-25")) && has_eot_id && !t->chat_template)
        t->chat_family = CHAT_BITNET;
    else if (tokenizer_find(t, "<|start_header_id|>") >= 0)
        t->chat_family = CHAT_LLAMA3;
    else
        t->chat_family = CHAT_CHATML;
    return 0;
}

const char *chat_template_name(const tokenizer_t *t) { return t->jinja ? "jinja" : FAMILY_NAMES[t->chat_family]; }

void chat_free(struct tokenizer *t) {
    free(t->chat_template);
    t->chat_template = NULL;
    jinja_destroy(&t->jinja);
}

int chat_template_set(tokenizer_t *t, const char *spec, int jinja, char *err, size_t errlen) {
    const char *text = spec && *spec ? spec : t->chat_template;
    for (int f = CHAT_LLAMA3; spec && f <= CHAT_PHI3; f++)
        if (!strcmp(spec, FAMILY_NAMES[f])) {   /* a family name: that formatter */
            jinja_destroy(&t->jinja);
            t->chat_family = f;
            t->thinks = 0;
            return 0;
        }
    if (!jinja) {
        if (spec && *spec) {
            int f = detect(spec);
            if (f == CHAT_NONE)
                return err_set(err, errlen, TERN_EINVAL, "--chat-template: not a template tern knows (%s); "
                               "use --jinja to render it as it is", "llama3, bitnet, falcon3, chatml, llama2, llama2-sys, phi3");
            t->chat_family = f;
            t->thinks = strstr(spec, "<think>") != NULL;
            jinja_destroy(&t->jinja);
        }
        return 0;
    }
    if (!text)
        return err_set(err, errlen, TERN_ENOTFOUND, "--jinja: the model has no chat template (tokenizer.chat_template); "
                       "give one with --chat-template-file FILE or --chat-template TEXT");
    char why[256];
    jinja_t *j = jinja_parse(text, strlen(text), NULL, why, sizeof why);
    if (!j) return err_set(err, errlen, TERN_EINVAL, "%s chat template: %s", spec && *spec ? "the" : "the model's", why);
    jinja_destroy(&t->jinja);
    t->jinja = j;
    t->tool_fmt = toolfmt_detect(text);
    t->thinks = strstr(text, "<think>") != NULL;
    return 0;
}

int chat_template_thinks(const tokenizer_t *t) { return t->thinks; }

int chat_tool_format(const tokenizer_t *t) { return t->jinja ? t->tool_fmt : TOOLFMT_GENERIC; }

void chat_template_describe(const char *tmpl, char *out, size_t n) {
    char why[200];
    int f = detect(tmpl);
    jinja_t *j = jinja_parse(tmpl, strlen(tmpl), NULL, why, sizeof why);
    snprintf(out, n, "%zu bytes, formatted as %s%s; --jinja: %s%s%s", strlen(tmpl),
             f == CHAT_NONE ? "llama3/chatml" : FAMILY_NAMES[f], f == CHAT_NONE ? " (no family matched)" : "",
             j ? "renders it, tool calls in the " : why, j ? toolfmt_name(toolfmt_detect(tmpl)) : "", j ? " format" : "");
    jinja_destroy(&j);
}

/* a token's text for bos_token / eos_token ("" when none) */
static json_t *token_text(const tokenizer_t *t, int id) {
    char buf[256];
    if (id < 0 || tokenizer_token_text(t, id, buf, sizeof buf) < 0) buf[0] = 0;
    buf[sizeof buf - 1] = 0;
    return json_string(buf);
}

/* the template's variables: messages (role, content, a tool message's tool_call_id, extra[i]'s
 * fields over them), add_generation_prompt, bos_token, eos_token, tools (none unless given: the
 * generic format describes tools in a system message instead) */
static json_t *jinja_vars(const tokenizer_t *t, const chat_msg_t *msgs, int n, const char *const *ids,
                          void *const *extra, json_t *tools, json_t *kwargs, int add_gen) {
    json_t *m = json_array();
    for (int i = 0; m && i < n; i++) {
        /* not checked as UTF-8: a typed line may hold any bytes, and the template copies them */
        json_t *o = json_pack("{s:o, s:o}", "role", json_string_nocheck(msgs[i].role), "content",
                              json_string_nocheck(msgs[i].content));
        if (o && ids && ids[i] && json_object_set_new(o, "tool_call_id", json_string_nocheck(ids[i]))) { json_decref(o); o = NULL; }
        if (o && extra && extra[i] && json_object_update(o, extra[i])) { json_decref(o); o = NULL; }
        if (!o || json_array_append_new(m, o)) { json_decref(m); return NULL; }
    }
    if (!m) return NULL;
    json_t *v = json_pack("{s:o, s:b, s:o, s:o, s:O}", "messages", m, "add_generation_prompt", add_gen,
                          "bos_token", token_text(t, t->bos), "eos_token", token_text(t, t->eos), "tools",
                          tools ? tools : json_null());
    if (v && kwargs && json_object_update(v, kwargs)) { json_decref(v); return NULL; }
    return v;
}

static int apply_jinja(const tokenizer_t *t, const chat_msg_t *msgs, int n, const char *const *ids,
                       void *const *extra, json_t *tools, json_t *kwargs, int add_gen, char *out, int cap) {
    json_t *vars = jinja_vars(t, msgs, n, ids, extra, tools, kwargs, add_gen);
    if (!vars) { snprintf(g_chat_err, sizeof g_chat_err, "out of memory"); return TERN_ENOMEM; }
    char why[256];
    size_t len = 0;
    int raised = 0;
    why[0] = 0;
    char *text = jinja_render(t->jinja, vars, &len, &raised, why, sizeof why);
    json_decref(vars);
    if (!text) {   /* raise_exception: the conversation is refused; else the template failed */
        snprintf(g_chat_err, sizeof g_chat_err, "the chat template %s: %.200s", raised ? "refused the conversation" : "failed",
                 why);   /* %.200s: the message is cut, not the build (-Wformat-truncation) */
        return raised ? TERN_EINVAL : TERN_EFORMAT;
    }
    size_t skip = 0;
    if (t->bos >= 0 && tokenizer_add_bos(t)) {   /* the tokenizer adds BOS: not twice */
        char bos[256];
        int k = tokenizer_token_text(t, t->bos, bos, sizeof bos);
        if (k > 0 && (size_t)k < sizeof bos && len >= (size_t)k && !memcmp(text, bos, (size_t)k)) skip = (size_t)k;
    }
    len -= skip;
    if (len > (size_t)INT32_MAX) { free(text); return TERN_EINVAL; }
    if (cap > 0) {
        size_t w = len < (size_t)cap ? len : (size_t)cap;
        memcpy(out, text + skip, w);
        if (len < (size_t)cap) out[len] = 0;
    }
    log_d("chat: the template rendered %zu bytes", len);
    free(text);
    return (int)len;
}

/* bounded appender: counts every byte, writes what fits */
typedef struct sbuf { char *p; size_t cap, n; } sbuf_t;
static void put(sbuf_t *b, const char *s, size_t n) {
    if (b->n < b->cap) memcpy(b->p + b->n, s, b->n + n <= b->cap ? n : b->cap - b->n);
    b->n += n;
}
static void puts_(sbuf_t *b, const char *s) { put(b, s, strlen(s)); }
static void put_trim(sbuf_t *b, const char *s) {
    size_t n = strlen(s);
    while (n && isspace((unsigned char)*s)) { s++; n--; }
    while (n && isspace((unsigned char)s[n - 1])) n--;
    put(b, s, n);
}
static void put_cap(sbuf_t *b, const char *role) {   /* "user" → "User" */
    char c = (char)toupper((unsigned char)role[0]);
    if (role[0]) { put(b, &c, 1); puts_(b, role + 1); }
}

static void fmt_llama2(sbuf_t *b, const chat_msg_t *m, int n, int sys) {
    int inside = 1;
    puts_(b, "[INST] ");
    for (int i = 0; i < n; i++) {
        if (!inside) { inside = 1; puts_(b, "[INST] "); }
        if (!strcmp(m[i].role, "system")) {
            if (sys) { puts_(b, "<<SYS>>\n"); puts_(b, m[i].content); puts_(b, "\n<</SYS>>\n\n"); }
            else { puts_(b, m[i].content); puts_(b, "\n"); }
        } else if (!strcmp(m[i].role, "user") || !strcmp(m[i].role, "tool")) {   /* no tool turn: a user's */
            puts_(b, m[i].content); puts_(b, " [/INST]");
        } else {
            puts_(b, m[i].content); puts_(b, "</s>");
            inside = 0;
        }
    }
}

/* the families whose format has a turn for any role name, so a "tool" message renders as its
 * own turn (llama3's header, chatml's im_start, bitnet's "Tool: "); the others (llama2, phi3,
 * falcon3) have fixed role tokens: callers render a tool result as a user message */
int chat_has_tool_role(const tokenizer_t *t) {
    return t->jinja || t->chat_family == CHAT_LLAMA3 || t->chat_family == CHAT_CHATML || t->chat_family == CHAT_BITNET;
}

int chat_apply(const tokenizer_t *t, const chat_msg_t *msgs, int n, char *out, int cap) {
    return chat_apply_ex(t, msgs, n, NULL, 1, out, cap);
}

int chat_apply_ex(const tokenizer_t *t, const chat_msg_t *msgs, int n, const char *const *tool_call_ids,
                  int add_generation_prompt, char *out, int cap) {
    return chat_apply_tools(t, msgs, n, tool_call_ids, NULL, NULL, add_generation_prompt, out, cap);
}

int chat_apply_tools(const tokenizer_t *t, const chat_msg_t *msgs, int n, const char *const *tool_call_ids,
                     void *const *extra, void *tools, int add_generation_prompt, char *out, int cap) {
    return chat_apply_vars(t, msgs, n, tool_call_ids, extra, tools, NULL, add_generation_prompt, out, cap);
}

int chat_apply_vars(const tokenizer_t *t, const chat_msg_t *msgs, int n, const char *const *tool_call_ids,
                    void *const *extra, void *tools, void *kwargs, int add_generation_prompt, char *out, int cap) {
    g_chat_err[0] = 0;
    if (n < 0 || (n && !msgs) || cap < 0) return TERN_EINVAL;
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content) return TERN_EINVAL;
    if (t->jinja) return apply_jinja(t, msgs, n, tool_call_ids, extra, tools, kwargs, add_generation_prompt, out, cap);
    sbuf_t b = {out, (size_t)cap, 0};
    switch (t->chat_family) {
    case CHAT_LLAMA3:
        for (int i = 0; i < n; i++) {
            puts_(&b, "<|start_header_id|>"); puts_(&b, msgs[i].role); puts_(&b, "<|end_header_id|>\n\n");
            put_trim(&b, msgs[i].content); puts_(&b, "<|eot_id|>");
        }
        puts_(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case CHAT_BITNET:   /* BitNet b1.58 2B-4T: "Role: content<|eot_id|>" … "Assistant: " */
        for (int i = 0; i < n; i++) {
            put_cap(&b, msgs[i].role); puts_(&b, ": "); put_trim(&b, msgs[i].content); puts_(&b, "<|eot_id|>");
        }
        puts_(&b, "Assistant: ");
        break;
    case CHAT_FALCON3:
        for (int i = 0; i < n; i++) {
            puts_(&b, "<|"); puts_(&b, msgs[i].role); puts_(&b, "|>\n"); puts_(&b, msgs[i].content); puts_(&b, "\n");
        }
        puts_(&b, "<|assistant|>\n");
        break;
    case CHAT_PHI3:
        for (int i = 0; i < n; i++) {
            puts_(&b, "<|"); puts_(&b, msgs[i].role); puts_(&b, "|>\n"); puts_(&b, msgs[i].content);
            puts_(&b, "<|end|>\n");
        }
        puts_(&b, "<|assistant|>\n");
        break;
    case CHAT_CHATML:
        for (int i = 0; i < n; i++) {
            puts_(&b, "<|im_start|>"); puts_(&b, msgs[i].role); puts_(&b, "\n"); puts_(&b, msgs[i].content);
            puts_(&b, "<|im_end|>\n");
        }
        puts_(&b, "<|im_start|>assistant\n");
        break;
    case CHAT_LLAMA2:
    case CHAT_LLAMA2_SYS:
        fmt_llama2(&b, msgs, n, t->chat_family == CHAT_LLAMA2_SYS);
        break;
    default:
        return TERN_ENOTSUP;
    }
    if (b.n > (size_t)INT32_MAX) return TERN_EINVAL;
    if (b.n < (size_t)cap) out[b.n] = 0;
    return (int)b.n;
}
