/* api: include/tern.h on top of the coordinator's parts — gguf + tokenizer + embedding on
 * this side, a pipeline of stages (local, or workers of a cluster), and the scheduler. */
#include "tern.h"
#include "coordinator/cluster_client.h"
#include "coordinator/cluster_embedded.h"
#include "coordinator/cluster_mpi.h"
#include "coordinator/engine.h"
#include "coordinator/draft.h"
#include "coordinator/embed.h"
#include "coordinator/pipeline_local.h"
#include "coordinator/sched.h"
#include "coordinator/tokenizer.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/types.h"
#include "kernels/ops.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* Without a cluster the workers are threads of this process over inproc:// (the embedded
 * default, one code path with a cluster). TERN_EMBEDDED=direct calls the stages directly
 * instead, with no transport in between: only to measure what the transport costs
 * (bench/e2e.sh). */
static int direct_stages(void) {
    const char *e = getenv("TERN_EMBEDDED");
    return e && !strcmp(e, "direct");
}

/* sched's drafter over draft.h */
static int draft_fn(void *user, int slot, const int32_t *toks, int n, int k, int32_t *out) {
    return draft_propose(user, slot, toks, n, k, out);
}

void tern_params_default(tern_params *p) {
    memset(p, 0, sizeof *p);
    p->n_batch = 64;
    p->prefill_chunk = -1;
    p->n_seq = 1;
    p->stages = 1;
    p->yarn_ext_factor = -1.0f;
}

/* p's RoPE flags applied to hp (checked); *set: whether any was given. 0 or <0 naming the flag. */
static int rope_flags(const tern_params *p, hparams_t *hp, int *set, char *err, size_t errlen) {
    rope_override_t o;
    rope_override_default(&o);
    if (p->rope_scaling && (o.type = rope_scaling_parse(p->rope_scaling)) < 0)
        return err_set(err, errlen, TERN_EINVAL, "--rope-scaling %s: expected none, linear or yarn", p->rope_scaling);
    if (p->rope_scale < 0 || p->rope_freq_scale < 0 || p->rope_freq_base < 0 || p->yarn_orig_ctx < 0 ||
        p->yarn_attn_factor < 0 || p->yarn_beta_fast < 0 || p->yarn_beta_slow < 0)
        return err_set(err, errlen, TERN_EINVAL, "RoPE flags: --rope-scale, --rope-freq-base, --rope-freq-scale, "
                       "--yarn-orig-ctx, --yarn-attn-factor, --yarn-beta-* must not be negative");
    o.freq_scale = p->rope_scale > 0 ? 1.0f / p->rope_scale : p->rope_freq_scale;   /* llama.cpp: --rope-scale wins */
    o.freq_base = p->rope_freq_base;
    o.n_ctx_orig = p->yarn_orig_ctx;
    o.ext_factor = p->yarn_ext_factor;
    o.attn_factor = p->yarn_attn_factor;
    o.beta_fast = p->yarn_beta_fast;
    o.beta_slow = p->yarn_beta_slow;
    *set = !rope_override_empty(&o);
    return *set ? hparams_rope_override(hp, &o, err, errlen) : 0;
}

void tern_sampling_default(tern_sampling *s) {
    sampler_params_t d;
    sampler_params_default(&d);
    s->temp = d.temp;
    s->top_k = d.top_k;
    s->top_p = d.top_p;
    s->min_p = d.min_p;
    s->repeat_penalty = d.repeat_penalty;
    s->repeat_last_n = d.repeat_last_n;
    s->seed = d.seed;
    s->grammar = NULL;
    s->freq_penalty = s->presence_penalty = 0.0f;
    s->n_bias = 0;
    s->ignore_eos = 0;
    s->bias_id = NULL;
    s->bias = NULL;
    s->n_keep = 0;
    s->typical_p = d.typical_p;
    s->top_n_sigma = d.top_n_sigma;
    s->xtc_probability = d.xtc_probability;
    s->xtc_threshold = d.xtc_threshold;
    s->dynatemp_range = d.dynatemp_range;
    s->dynatemp_exponent = d.dynatemp_exponent;
    s->mirostat = d.mirostat;
    s->mirostat_tau = d.mirostat_tau;
    s->mirostat_eta = d.mirostat_eta;
    s->dry_multiplier = d.dry_multiplier;
    s->dry_base = d.dry_base;
    s->dry_allowed_length = d.dry_allowed_length;
    s->dry_penalty_last_n = d.dry_penalty_last_n;
    s->dry_breakers = NULL;
    s->n_dry_breakers = 0;
    s->sampling_seq = NULL;
}

const char *tern_last_error(const tern_model *m) { return m ? m->err : "no model"; }

/* --mlock on the coordinator: the token embeddings, read in place every step (the stages lock
 * their own layers) */
static int lock_embeddings(tern_model *m) {
    const gguf_tensor_t *t = m->emb.t;
    if (memlock_add(&m->lock, t->data, t->nbytes) < 0) return TERN_ENOMEM;
    char sz[32];
    memlock_apply(&m->lock, "token embeddings");
    log_i("--mlock: locked %s in memory (token embeddings)", memlock_size(sz, sizeof sz, m->lock.locked));
    return 0;
}

int tern_load(tern_model **out, const tern_params *p, char *err, size_t errlen) {
    *out = NULL;
    double t0 = time_now();
    if (!p->model) return err_set(err, errlen, TERN_EINVAL, "no model given (-m FILE)");
    tern_model *m = calloc(1, sizeof *m);
    if (!m) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    int rc = gguf_open_ex(&m->g, p->model, p->no_mmap ? GGUF_NO_MMAP : 0, err, errlen);
    if (rc < 0) goto fail;
    if ((rc = hparams_from_gguf(&m->hp, m->g, err, errlen)) < 0) goto fail;
    if ((rc = tokenizer_load(&m->tok, m->g, err, errlen)) < 0) goto fail;
    if ((rc = embed_init(&m->emb, m->g, err, errlen)) < 0) goto fail;
    m->n_ctx = p->n_ctx > 0 ? p->n_ctx : (m->hp.n_ctx_train > 0 && m->hp.n_ctx_train < 4096 ? m->hp.n_ctx_train : 4096);
    int threads = p->n_threads > 0 ? p->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    stage_cfg_t cfg;
    stage_cfg_default(&cfg);
    if ((rc = rope_flags(p, &m->hp, &cfg.rope_set, err, errlen)) < 0) goto fail;
    cfg.rope_base = m->hp.rope_base;
    cfg.rope = m->hp.rope;
    cfg.n_ctx = m->n_ctx;
    cfg.n_seq = p->n_seq > 0 ? p->n_seq : 1;
    cfg.mlock = p->mlock;
    cfg.no_mmap = p->no_mmap;
    cfg.threads_batch = p->n_threads_batch;
    if (p->mlock && (rc = lock_embeddings(m)) < 0) {
        err_set(err, errlen, rc, "out of memory");
        goto fail;
    }
    int n_batch = p->n_batch > 0 ? p->n_batch : 64;   /* a step's tokens; the stages pass them in -ub pieces */
    cfg.n_batch = p->n_ubatch > 0 && p->n_ubatch < n_batch ? p->n_ubatch : n_batch;
    cfg.kv_type = p->kv_f32 ? KV_F32 : KV_F16;
    if (p->kv_type && (cfg.kv_type = ops_kv_parse(p->kv_type)) < 0) {
        rc = err_set(err, errlen, TERN_EINVAL, "--kv-type %s: expected f16, f32 or q8_0", p->kv_type);
        goto fail;
    }
    m->kv_type = cfg.kv_type;
    if (cfg.kv_type == KV_Q8_0 && m->hp.head_dim % KV_Q8_0_BLOCK) {
        rc = err_set(err, errlen, TERN_EINVAL, "--kv-type q8_0 needs a head size that is a multiple of 32 (this model: %d)",
                     m->hp.head_dim);
        goto fail;
    }
    if (p->head_type) {
        cfg.head_type = type_from_name(p->head_type);
        if (cfg.head_type != TT_Q8_0 && cfg.head_type != TT_F16 && cfg.head_type != TT_F32) {
            rc = err_set(err, errlen, TERN_EINVAL, "--head %s: expected f16, q8_0 or f32", p->head_type);
            goto fail;
        }
    }
    if (p->n_gpu_layers > 0 && (p->cluster || p->workers)) {
        rc = err_set(err, errlen, TERN_EINVAL, "-ngl is for the local engine; on a cluster run `tern worker --device cuda`");
        goto fail;
    }
    if (p->mpi) {
        rc = cluster_pipeline_new_mpi(&m->pl, m->g, p->model, p->cluster, &cfg, err, errlen);
    } else if (p->cluster || p->workers) {
        rc = cluster_pipeline_new(&m->pl, m->g, p->model, p->cluster, p->workers, &cfg, threads, err, errlen);
    } else if (direct_stages()) {
        if (!(m->tp = tpool_new(threads))) { rc = err_set(err, errlen, TERN_ENOMEM, "cannot start %d threads", threads); goto fail; }
        rc = pipeline_local_new_gpu(&m->pl, m->g, &cfg, p->stages > 0 ? p->stages : 1, p->n_gpu_layers, m->tp, err,
                                    errlen);
    } else {
        rc = cluster_pipeline_new_embedded(&m->pl, m->g, p->model, &cfg, p->stages > 0 ? p->stages : 1,
                                           p->n_gpu_layers, threads, err, errlen);
    }
    if (rc < 0) goto fail;
    if ((rc = sched_init(&m->sched, m->pl, &m->emb, cfg.n_seq, cfg.n_ctx, n_batch, err, errlen)) < 0) goto fail;
    kvfile_model_t kvm;   /* what slot files (save / restore, --prompt-cache) must match */
    if ((rc = kvfile_model_init(&kvm, p->model, &m->hp, cfg.kv_type, err, errlen)) < 0) goto fail;
    const gguf_tensor_t *ff = gguf_find_tensor(m->g, ROPE_FREQS_NAME);   /* the keys' RoPE, as the stages run it */
    if (ff && (rc = gguf_tensor_load(m->g, ff, err, errlen)) < 0) goto fail;
    kvfile_model_rope(&kvm, &m->hp, ff ? ff->data : NULL, ff ? ff->nbytes : 0, cfg.rope_set);
    sched_set_model(&m->sched, &kvm);
    if (p->prefill_chunk >= 0) sched_set_prefill_chunk(&m->sched, p->prefill_chunk);
    sched_set_context_shift(&m->sched, p->context_shift);
    if (sched_set_lookup(&m->sched, p->lookup) < 0) {
        rc = err_set(err, errlen, TERN_EINVAL, "--lookup %d: expected 0..%d draft tokens", p->lookup, SCHED_LOOKUP_MAX);
        goto fail;
    }
    if (p->draft_model) {   /* speculative decoding: the draft model proposes, the model confirms */
        int nd = p->n_draft > 0 ? p->n_draft : 8;
        if (sched_set_lookup(&m->sched, nd) < 0) {
            rc = err_set(err, errlen, TERN_EINVAL, "--draft %d: expected 1..%d draft tokens", nd, SCHED_LOOKUP_MAX);
            goto fail;
        }
        draft_opts_t dopt = {.n_vocab = m->hp.n_vocab, .n_seq = cfg.n_seq, .n_ctx = cfg.n_ctx, .n_batch = n_batch,
                             .threads = threads, .no_mmap = p->no_mmap, .mlock = p->mlock};   /* as the model's */
        if ((rc = draft_open(&m->draft, p->draft_model, m->g, &dopt, err, errlen)) < 0) goto fail;
        sched_set_drafter(&m->sched, draft_fn, m->draft);
    }
    log_d("engine: %d sequence slot%s of %d tokens, steps of up to %d tokens in forward passes of %d", cfg.n_seq,
          cfg.n_seq == 1 ? "" : "s", cfg.n_ctx, n_batch, cfg.n_batch);
    m->t_load = time_now() - t0;
    *out = m;
    return 0;
fail:
    tern_model_free(&m);
    return rc;
}

void tern_model_free(tern_model **pm) {
    if (!pm || !*pm) return;
    tern_model *m = *pm;
    sched_free(&m->sched);
    draft_close(&m->draft);
    pipeline_destroy(&m->pl);
    tpool_destroy(&m->tp);
    memlock_free(&m->lock);
    tokenizer_destroy(&m->tok);
    grammar_vocab_destroy(&m->gvocab);
    gguf_close(&m->g);
    free(m);
    *pm = NULL;
}

const grammar_vocab_t *engine_grammar_vocab(tern_model *m) {
    if (m->gvocab) return m->gvocab;
    int V = tokenizer_n_vocab(m->tok), cap = tokenizer_max_piece(m->tok) + 8, n_eog = 0;
    char **pieces = calloc((size_t)V, sizeof *pieces);
    int *len = calloc((size_t)V, sizeof *len);
    int32_t *eog = calloc((size_t)V, sizeof *eog);
    char *buf = malloc((size_t)cap);
    int ok = pieces && len && eog && buf;
    for (int t = 0; ok && t < V; t++) {
        if (tokenizer_is_eog(m->tok, t)) eog[n_eog++] = t;
        int n = tokenizer_piece(m->tok, t, 0, buf, cap);   /* control tokens render as "": never allowed */
        if (n <= 0) continue;
        if (!(pieces[t] = malloc((size_t)n))) ok = 0;
        else memcpy(pieces[t], buf, (size_t)n), len[t] = n;
    }
    if (ok) m->gvocab = grammar_vocab_new(V, (const char *const *)pieces, len, eog, n_eog);
    for (int t = 0; pieces && t < V; t++) free(pieces[t]);
    free(pieces);
    free(len);
    free(eog);
    free(buf);
    return m->gvocab;
}

/* the sequence `id` just added follows the GBNF text `gbnf`; 0 or <0 (m->err says why, the
 * sequence is cancelled) */
int engine_start_grammar(tern_model *m, int id, const char *gbnf, const char *trigger) {
    char err[200];
    grammar_t *g = grammar_parse(gbnf, strlen(gbnf), NULL, err, sizeof err);
    if (!g) return sched_fail(&m->sched, id, TERN_EINVAL, err);
    const grammar_vocab_t *v = engine_grammar_vocab(m);
    if (!v) {
        grammar_destroy(&g);
        return sched_fail(&m->sched, id, TERN_ENOMEM, "grammar: out of memory");
    }
    int rc = sched_set_grammar(&m->sched, id, &g, v, err, sizeof err);   /* failed: ended as SCHED_ERROR */
    if (rc == 0 && trigger && (rc = sched_grammar_trigger(&m->sched, id, trigger)) < 0)
        sched_fail(&m->sched, id, rc, "grammar: a bad trigger");
    int tok = rc == 0 ? engine_trigger_token(m, trigger) : -1;
    if (tok >= 0) sched_grammar_trigger_token(&m->sched, id, tok);
    return rc;
}

int engine_trigger_token(tern_model *m, const char *trigger) {
    char piece[16];
    int tok = trigger ? tokenizer_find(m->tok, trigger) : -1;
    return tok >= 0 && tokenizer_piece(m->tok, tok, 0, piece, sizeof piece) == 0 ? tok : -1;   /* a control token: no text */
}

int tern_tokenize(tern_model *m, const char *text, int add_bos, int32_t *ids, int cap) {
    return tokenizer_encode(m->tok, text, strlen(text), add_bos && tokenizer_add_bos(m->tok), 1, ids, cap);
}

typedef struct gen_ctx {
    tern_model *m;
    detok_t dt;
    tern_token_cb cb;
    void *user;
    int stopped;
    int failed;            /* the sequence ended with SCHED_ERROR */
} gen_ctx_t;

static int on_token(void *user, int id, int32_t token, float logprob, const sched_top_t *top, int finish) {
    gen_ctx_t *g = user;
    (void)id;
    (void)logprob;
    (void)top;
    char buf[256];
    if (finish) {
        int n = detok_flush(&g->dt, buf, sizeof buf);
        if (n > 0 && g->cb) g->cb(g->user, buf, (size_t)n, -1);
        g->failed = finish == SCHED_ERROR;   /* this sequence alone (a grammar's dead end, ...): sched.err */
        return 0;
    }
    if (tokenizer_is_eog(g->m->tok, token)) return 1;
    int n = detok_feed(&g->dt, token, buf, sizeof buf);
    if (g->cb && g->cb(g->user, buf, (size_t)(n > 0 ? n : 0), token)) return 1;
    return 0;
}

int engine_keep(const tern_model *m, int n_keep) {
    return n_keep < 0 ? -1 : n_keep + (tokenizer_add_bos(m->tok) ? 1 : 0);
}

void engine_sampler_params(const tern_sampling *s, sampler_params_t *sp) {
    sampler_params_default(sp);
    tern_sampling def;
    if (!s) { tern_sampling_default(&def); s = &def; }
    sp->temp = s->temp;
    sp->top_k = s->top_k;
    sp->top_p = s->top_p;
    sp->min_p = s->min_p;
    sp->repeat_penalty = s->repeat_penalty;
    sp->repeat_last_n = s->repeat_last_n;
    sp->seed = s->seed;
    sp->freq_penalty = s->freq_penalty;
    sp->presence_penalty = s->presence_penalty;
    sp->n_bias = s->n_bias > SAMPLER_BIAS_MAX ? SAMPLER_BIAS_MAX : s->n_bias > 0 && s->bias_id && s->bias ? s->n_bias : 0;
    for (int i = 0; i < sp->n_bias; i++) sp->bias_id[i] = s->bias_id[i], sp->bias[i] = s->bias[i];
    sp->typical_p = s->typical_p;
    sp->top_n_sigma = s->top_n_sigma > 0 ? s->top_n_sigma : 0.0f;   /* llama.cpp's -1: off */
    sp->xtc_probability = s->xtc_probability;
    sp->xtc_threshold = s->xtc_threshold;
    sp->dynatemp_range = s->dynatemp_range;
    sp->dynatemp_exponent = s->dynatemp_exponent;
    sp->mirostat = s->mirostat;
    sp->mirostat_tau = s->mirostat_tau;
    sp->mirostat_eta = s->mirostat_eta;
    sp->dry_multiplier = s->dry_multiplier;
    sp->dry_base = s->dry_base;
    sp->dry_allowed_length = s->dry_allowed_length;
    sp->dry_penalty_last_n = s->dry_penalty_last_n > SAMPLER_DRY_MAX ? SAMPLER_DRY_MAX : s->dry_penalty_last_n;
    if (s->sampling_seq) sampler_order_parse(sp, s->sampling_seq, 1, NULL, 0);   /* a bad one: engine_sampling_check */
}

int engine_sampling_check(const tern_sampling *s, char *err, size_t errlen) {
    sampler_params_t *sp;
    if (!s || !s->sampling_seq) return 0;
    if (!(sp = malloc(sizeof *sp))) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    char why[200];
    int rc = sampler_order_parse(sp, s->sampling_seq, 1, why, sizeof why);
    free(sp);
    return rc < 0 ? err_set(err, errlen, rc, "sampling_seq: %s", why) : 0;
}

#define DRY_CHARS_MAX 40   /* llama.cpp's MAX_CHAR_LEN */

/* adds (head, tail) to sp's breakers unless there already; <0 when full */
static int dry_add(sampler_params_t *sp, int *ntok, int32_t head, const int32_t *tail, int ntail) {
    for (int k = 0, off = 0; k < sp->n_dry_seq; off += sp->dry_seq_len[k++])
        if (sp->dry_tok[off] == head && sp->dry_seq_len[k] == ntail + 1 &&
            (ntail == 0 || !memcmp(sp->dry_tok + off + 1, tail, (size_t)ntail * sizeof *tail)))
            return 0;
    if (sp->n_dry_seq == SAMPLER_DRY_SEQ_MAX || *ntok + 1 + ntail > SAMPLER_DRY_TOK_MAX) return -1;
    sp->dry_tok[*ntok] = head;
    if (ntail) memcpy(sp->dry_tok + *ntok + 1, tail, (size_t)ntail * sizeof *tail);   /* tail may be NULL then */
    sp->dry_seq_len[sp->n_dry_seq++] = (uint8_t)(1 + ntail);
    *ntok += 1 + ntail;
    return 0;
}

/* one breaker string over the vocabulary (llama.cpp's get_overlapping_token_sequences) */
static int dry_one(const tokenizer_t *t, const char *str, sampler_params_t *sp, int *ntok) {
    size_t sl = strnlen(str, DRY_CHARS_MAX);
    if (!sl) return 0;   /* llama.cpp skips empty breakers */
    char word[512];
    int32_t tail[64];
    for (int id = 0, V = tokenizer_n_vocab(t); id < V; id++) {
        int wl = tokenizer_piece(t, id, 1, word, (int)sizeof word);
        if (wl <= 0 || wl > (int)sizeof word) continue;
        int contains = 0;
        for (size_t at = 0; !contains && at + sl <= (size_t)wl; at++) contains = !memcmp(word + at, str, sl);
        if (contains) {
            if (dry_add(sp, ntok, id, NULL, 0) < 0) return -1;
            continue;
        }
        for (size_t at = 0; at < (size_t)wl; at++) {   /* the word's end is a start of str */
            if (word[at] != str[0]) continue;
            size_t i = 1;
            while (i < sl && at + i < (size_t)wl && word[at + i] == str[i]) i++;
            if (i < sl && at + i < (size_t)wl) continue;   /* a mismatch inside the word */
            int nt = tokenizer_encode(t, str + i, sl - i, 0, 0, tail, 64);
            if (nt < 0) continue;
            if (nt > 64) nt = 64;
            if (nt > SAMPLER_DRY_TAIL_MAX) nt = SAMPLER_DRY_TAIL_MAX;
            if (dry_add(sp, ntok, id, tail, nt) < 0) return -1;
        }
    }
    return 0;
}

int engine_dry_breakers(const tern_model *m, const char *const *strs, int n, sampler_params_t *sp, char *err,
                        size_t errlen) {
    static const char *const defaults[] = {"\n", ":", "\"", "*"};
    if (!strs) strs = defaults, n = 4;
    int ntok = 0;
    sp->n_dry_seq = 0;
    for (int i = 0; i < n; i++)
        if (strs[i] && dry_one(m->tok, strs[i], sp, &ntok) < 0) {
            sp->n_dry_seq = 0;
            return err_set(err, errlen, TERN_EINVAL, "DRY sequence breakers: \"%.40s\" and those before it match more "
                           "than %d token sequences (%d tokens) of the vocabulary", strs[i], SAMPLER_DRY_SEQ_MAX,
                           SAMPLER_DRY_TOK_MAX);
        }
    return 0;
}

int engine_ban_eog(const tern_model *m, sampler_params_t *sp, char *err, size_t errlen) {
    int V = tokenizer_n_vocab(m->tok);
    for (int t = 0; t < V; t++) {
        if (!tokenizer_is_eog(m->tok, t)) continue;
        if (sp->n_bias == SAMPLER_BIAS_MAX)
            return err_set(err, errlen, TERN_EINVAL, "ignore_eos: no room for the end-of-generation tokens among %d "
                           "logit biases", SAMPLER_BIAS_MAX);
        sp->bias_id[sp->n_bias] = t;
        sp->bias[sp->n_bias++] = -1e30f;   /* as good as -inf, and finite as the wire wants biases */
    }
    return 0;
}

int tern_generate_ids(tern_model *m, const int32_t *ids, int n, int n_predict, const tern_sampling *s,
                      tern_token_cb cb, void *user, tern_stats *stats) {
    sampler_params_t sp;
    tern_sampling def;
    if (!s) { tern_sampling_default(&def); s = &def; }
    if (engine_sampling_check(s, m->err, sizeof m->err) < 0) return TERN_EINVAL;
    engine_sampler_params(s, &sp);
    if (s->ignore_eos && engine_ban_eog(m, &sp, m->err, sizeof m->err) < 0) return TERN_EINVAL;
    if (sampler_params_dry(&sp) &&
        engine_dry_breakers(m, s->dry_breakers, s->n_dry_breakers, &sp, m->err, sizeof m->err) < 0)
        return TERN_EINVAL;
    for (int i = 0; i < sp.n_bias; i++)
        if (sp.bias_id[i] < 0 || sp.bias_id[i] >= m->pl->n_vocab) {
            snprintf(m->err, sizeof m->err, "logit bias: token id %d is outside the vocabulary (%d tokens)", sp.bias_id[i],
                     m->pl->n_vocab);
            return TERN_EINVAL;
        }
    if (n >= m->n_ctx) {
        snprintf(m->err, sizeof m->err, "the prompt has %d tokens but the context holds %d (raise -c)", n, m->n_ctx);
        return TERN_EINVAL;
    }
    if (n_predict < 0) n_predict = m->n_ctx - n;
    if (n_predict == 0) return 0;
    gen_ctx_t g = {m, {0}, cb, user, 0, 0};
    detok_init(&g.dt, m->tok, 0);
    detok_continue(&g.dt);   /* the generated text follows the prompt */
    sched_t *sc = &m->sched;
    sc->t_prefill = sc->t_decode = 0;
    sc->n_prefill_tok = sc->n_decode_tok = 0;
    sc->n_drafted = sc->n_draft_ok = 0;
    long shifts0 = sc->n_ctx_shifts;
    int id = sched_add(sc, ids, n, n_predict, &sp, on_token, &g);
    if (id < 0) {
        snprintf(m->err, sizeof m->err, "cannot start the sequence: %s", tern_strerror(id));
        return id;
    }
    sched_set_keep(sc, id, engine_keep(m, s->n_keep));   /* right after sched_add: cannot fail */
    int rc, n_cached = sched_cached(sc, id);   /* prefix cache (--prompt-cache): not fed */
    if (s->grammar && (rc = engine_start_grammar(m, id, s->grammar, NULL)) < 0) {
        snprintf(m->err, sizeof m->err, "%s", sc->err);
        return rc;
    }
    while ((rc = sched_step(sc)) > 0) {}
    if (rc < 0 || g.failed) {
        snprintf(m->err, sizeof m->err, "%s", sc->err);
        return rc < 0 ? rc : sc->err_code < 0 ? sc->err_code : TERN_EINVAL;
    }
    int n_gen = 0;
    for (int i = 0; i < sc->n_seq; i++)
        if (sc->seqs[i].id == id) n_gen = sc->seqs[i].n_gen;
    if (stats) {
        stats->t_load = m->t_load;
        stats->t_prompt = sc->t_prefill;
        stats->t_gen = sc->t_decode;
        stats->n_prompt = n;
        stats->n_cached = n_cached;
        /* the tokens after the first (which the prompt's last step samples): with drafts not the
         * tokens the decode steps fed, after a recovery not counting replayed samples twice */
        stats->n_gen = n_gen > 0 ? n_gen - 1 : 0;
        stats->n_drafted = sc->n_drafted;
        stats->n_draft_ok = sc->n_draft_ok;
        stats->weight_bytes = m->pl->weight_bytes;
        stats->n_ctx_shifts = (int)(sc->n_ctx_shifts - shifts0);
    }
    return n_gen;
}

int tern_generate(tern_model *m, const char *prompt, int n_predict, const tern_sampling *s, tern_token_cb cb,
                  void *user, tern_stats *stats) {
    int cap = m->n_ctx + 8;
    int32_t *ids = malloc((size_t)cap * sizeof(int32_t));
    if (!ids) return TERN_ENOMEM;
    int n = tern_tokenize(m, prompt, 1, ids, cap);
    int rc;
    if (n < 0) {
        snprintf(m->err, sizeof m->err, "cannot tokenize the prompt");
        rc = n;
    } else if (n == 0) {
        snprintf(m->err, sizeof m->err, "the prompt is empty and the vocabulary has no BOS token");
        rc = TERN_EINVAL;
    } else if (n >= m->n_ctx) {
        snprintf(m->err, sizeof m->err, "the prompt has %d tokens but the context holds %d (raise -c)", n, m->n_ctx);
        rc = TERN_EINVAL;
    } else {
        rc = tern_generate_ids(m, ids, n, n_predict, s, cb, user, stats);
    }
    free(ids);
    return rc;
}
