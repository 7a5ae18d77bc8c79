/* transport: the backend-independent half of transport.h — scheme dispatch, the envelope
 * (pack, decode into a per-message arena), and validation of every message against its
 * tensor frame, the same checks on receive and before send. Untrusted bytes end here: what
 * leaves tp_recv has a known body, our version and sizes that agree. Not here: sockets
 * (zmq.c, inproc.c) and keys (curve.c). */
#include "proto/transport.h"
#include "proto/curve.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/progress.h"
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TP_ARENA_FIRST 16384

/* ---- arena for protobuf-c unpacking: bump allocation, reset per message -------------------
 * One block that grows to the largest message seen, so steady traffic allocates nothing. */
typedef struct tp_big {
    struct tp_big *next;
    max_align_t data[];
} tp_big_t;

struct tp_arena {
    uint8_t *base;
    size_t cap, used;
    tp_big_t *big;      /* overflow allocations of the current message */
    size_t big_bytes;
};

static void *arena_alloc(void *ap, size_t n) {
    tp_arena_t *a = ap;
    n = (n + 15) & ~(size_t)15;
    if (a->used + n <= a->cap) {
        void *p = a->base + a->used;
        a->used += n;
        return p;
    }
    tp_big_t *b = malloc(sizeof *b + n);
    if (!b) return NULL;
    b->next = a->big;
    a->big = b;
    a->big_bytes += n;
    return b->data;
}

static void arena_free(void *ap, void *p) { (void)ap, (void)p; }   /* all at reset */

/* Frees overflow blocks; if there were any, regrows the main block to hold them next time. */
static void arena_reset(tp_arena_t *a) {
    size_t want = a->used + a->big_bytes;
    while (a->big) {
        tp_big_t *n = a->big->next;
        free(a->big);
        a->big = n;
    }
    if (a->big_bytes && want > a->cap) {
        uint8_t *nb = malloc(want * 2);
        if (nb) {
            free(a->base);
            a->base = nb;
            a->cap = want * 2;
        }
    }
    a->big_bytes = 0;
    a->used = 0;
}

void tp_msg_init(tp_msg_t *m) {
    memset(m, 0, sizeof *m);
}

void tp_msg_free(tp_msg_t *m) {
    if (!m) return;
    if (m->arena) {
        arena_reset(m->arena);
        free(m->arena->base);
        free(m->arena);
    }
    tern_free(m->buf);
    memset(m, 0, sizeof *m);
}

static tp_arena_t *msg_arena(tp_msg_t *m) {
    if (m->arena) return m->arena;
    tp_arena_t *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->base = malloc(TP_ARENA_FIRST);
    if (!a->base) {
        free(a);
        return NULL;
    }
    a->cap = TP_ARENA_FIRST;
    return m->arena = a;
}

/* ---- names ---------------------------------------------------------------------------- */

const char *tp_body_name(int body_case) {
    switch (body_case) {
    case TERN__MSG__BODY_HELLO: return "hello";
    case TERN__MSG__BODY_HELLO_ACK: return "hello_ack";
    case TERN__MSG__BODY_REFUSE: return "refuse";
    case TERN__MSG__BODY_LOAD_SHARD: return "load_shard";
    case TERN__MSG__BODY_SHARD_READY: return "shard_ready";
    case TERN__MSG__BODY_FORWARD: return "forward";
    case TERN__MSG__BODY_SAMPLED: return "sampled";
    case TERN__MSG__BODY_FREE_SEQUENCE: return "free_sequence";
    case TERN__MSG__BODY_HEARTBEAT: return "heartbeat";
    case TERN__MSG__BODY_ERROR: return "error";
    case TERN__MSG__BODY_SHUTDOWN: return "shutdown";
    case TERN__MSG__BODY_WEIGHT_REQUEST: return "weight_request";
    case TERN__MSG__BODY_WEIGHT_CHUNK: return "weight_chunk";
    case TERN__MSG__BODY_KV_READ: return "kv_read";
    case TERN__MSG__BODY_KV_DATA: return "kv_data";
    case TERN__MSG__BODY_KV_WRITE: return "kv_write";
    case TERN__MSG__BODY_KV_DONE: return "kv_done";
    default: return "none";
    }
}

int tp_hello_check(const Tern__Hello *h, const char *peer, char *err, size_t errlen) {
    if (h->proto_version != TERN_PROTO_VERSION)
        return err_set(err, errlen, TERN_EPROTO, "peer %s speaks protocol v%u, this tern speaks v%d",
                       peer, h->proto_version, TERN_PROTO_VERSION);
    return 0;
}

/* ---- validation ------------------------------------------------------------------------ */

static int str_ok(const char *s, size_t max) {
    return s && strnlen(s, max) < max;
}

static int floats_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

static int in01(float x) { return isfinite(x) && x >= 0 && x <= 1; }
static int nonneg(float x) { return isfinite(x) && x >= 0; }

/* the breakers: bounded counts, each 1..TP_MAX_DRY_LEN tokens, the lengths adding up, no
 * negative id */
static int dry_ok(const Tern__SamplingParams *p) {
    if (p->n_dry_breaker_lens > TP_MAX_DRY_SEQ || p->n_dry_breaker_tokens > TP_MAX_DRY_TOK) return 0;
    size_t sum = 0;
    for (size_t i = 0; i < p->n_dry_breaker_lens; i++) {
        if (p->dry_breaker_lens[i] < 1 || p->dry_breaker_lens[i] > TP_MAX_DRY_LEN) return 0;
        sum += p->dry_breaker_lens[i];
    }
    for (size_t i = 0; i < p->n_dry_breaker_tokens; i++)
        if (p->dry_breaker_tokens[i] < 0) return 0;
    return sum == p->n_dry_breaker_tokens;
}

/* the order: at most TP_MAX_ORDER known letters ("" or none: the default) */
static int order_ok(const char *o) {
    if (!o) return 1;
    size_t n = strnlen(o, TP_MAX_ORDER + 1);
    if (n > TP_MAX_ORDER) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr(TP_ORDER_LETTERS, o[i])) return 0;
    return 1;
}

/* v4's samplers: probabilities in [0, 1], the rest finite and not negative */
static int params_v4_ok(const Tern__SamplingParams *p) {
    return in01(p->typical_p) && nonneg(p->top_n_sigma) && in01(p->xtc_probability) && in01(p->xtc_threshold) &&
           nonneg(p->dynatemp_range) && nonneg(p->dynatemp_exponent) && p->mirostat <= 2 && nonneg(p->mirostat_tau) &&
           nonneg(p->mirostat_eta) && nonneg(p->dry_multiplier) && nonneg(p->dry_base) &&
           p->dry_allowed_length <= (1u << 20) && p->dry_penalty_last_n >= -1 && dry_ok(p) && order_ok(p->sampler_order);
}

static int params_ok(const Tern__SamplingParams *p) {
    return p && params_v4_ok(p) && isfinite(p->temp) && p->temp >= 0 && isfinite(p->top_p) && p->top_p >= 0 &&
           p->top_p <= 1 && isfinite(p->min_p) && p->min_p >= 0 && p->min_p <= 1 &&
           isfinite(p->repeat_penalty) && p->repeat_penalty > 0 && p->repeat_last_n >= 0 &&
           isfinite(p->frequency_penalty) && isfinite(p->presence_penalty) && p->n_bias_ids == p->n_bias_values &&
           p->n_bias_ids <= TP_MAX_BIAS && floats_finite(p->bias_values, p->n_bias_values);
}

static int has_token(const Tern__Forward *f, uint32_t seq) {
    for (size_t i = 0; i < f->n_seq_ids; i++)
        if (f->seq_ids[i] == seq) return 1;
    return 0;
}

static int check_forward(const Tern__Forward *f, uint64_t tb, const char *peer, char *err,
                         size_t errlen) {
#define BAD(fmt, ...) err_set(err, errlen, TERN_EPROTO, "peer %s: forward: " fmt, peer, ##__VA_ARGS__)
    uint64_t n = f->n_tokens;
    if (n == 0 || n > TP_MAX_TOKENS) return BAD("n_tokens %llu not in [1, %u]", (unsigned long long)n, TP_MAX_TOKENS);
    if (f->n_seq_ids != n || f->n_positions != n)
        return BAD("%zu seq_ids and %zu positions for %llu tokens", f->n_seq_ids, f->n_positions,
                   (unsigned long long)n);
    if (f->n_token_ids && f->n_token_ids != n) return BAD("%zu token ids for %llu tokens", f->n_token_ids, (unsigned long long)n);
    if (f->n_sample && f->n_sample != n) return BAD("%zu sample flags for %llu tokens", f->n_sample, (unsigned long long)n);
    if (f->n_targets && f->n_targets != n) return BAD("%zu targets for %llu tokens", f->n_targets, (unsigned long long)n);
    if (f->n_embd && f->n_embd != n) return BAD("%zu embedding flags for %llu tokens", f->n_embd, (unsigned long long)n);
    for (size_t i = 0; i < f->n_targets; i++)
        if (f->targets[i] < -1) return BAD("target %d of token %zu", f->targets[i], i);
    for (size_t i = 0; i < f->n_sampling; i++) {
        if (!params_ok(f->sampling[i]->params))
            return BAD("sampling params of sequence %u missing or out of range", f->sampling[i]->seq_id);
        for (size_t j = 0; j < i; j++)
            if (f->sampling[j]->seq_id == f->sampling[i]->seq_id)
                return BAD("sequence %u has two sampling entries", f->sampling[i]->seq_id);
    }
    /* sampling entries start sequences (they reset that slot's sampler); later steps of the
     * sequence carry none, so only a start for a sequence absent from the step is malformed */
    for (size_t i = 0; i < f->n_sampling; i++)
        if (!has_token(f, f->sampling[i]->seq_id))
            return BAD("sampling params for sequence %u, which has no token in this step", f->sampling[i]->seq_id);
    if (f->hidden_size == 0) {
        if (!f->n_token_ids) return BAD("neither token ids nor a hidden state");
        if (tb) return BAD("%llu-byte frame with hidden_size 0", (unsigned long long)tb);
        return 0;
    }
    if (f->hidden_size > TP_MAX_HIDDEN) return BAD("hidden_size %u > %u", f->hidden_size, TP_MAX_HIDDEN);
    uint64_t es = f->dtype == TERN__DTYPE__DTYPE_F32 ? 4 : (f->dtype == TERN__DTYPE__DTYPE_F16 ||
                                                             f->dtype == TERN__DTYPE__DTYPE_BF16) ? 2 : 0;
    if (!es) return BAD("unknown hidden dtype %d", (int)f->dtype);
    uint64_t want = n * f->hidden_size * es;   /* < 2^16 * 2^18 * 4: no overflow */
    if (tb != want)
        return BAD("hidden frame is %llu bytes, expected n_tokens %llu x hidden %u x %llu = %llu",
                   (unsigned long long)tb, (unsigned long long)n, f->hidden_size, (unsigned long long)es,
                   (unsigned long long)want);
    return 0;
#undef BAD
}

static int check_sampled(const Tern__Sampled *s, uint64_t tb, const char *peer, char *err,
                         size_t errlen) {
    size_t n = s->n_seq_ids;
    if (s->n_token_ids != n || (s->n_logprobs && s->n_logprobs != n))
        return err_set(err, errlen, TERN_EPROTO, "peer %s: sampled: %zu seq_ids, %zu tokens, %zu logprobs",
                       peer, n, s->n_token_ids, s->n_logprobs);
    if (s->vocab > TP_MAX_VOCAB)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: sampled: vocab %u > %u", peer, s->vocab, TP_MAX_VOCAB);
    if (s->n_target_logprobs > TP_MAX_TOKENS)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: sampled: %zu target logprobs (max %u)", peer,
                       s->n_target_logprobs, TP_MAX_TOKENS);
    if (s->target_n_top > TP_MAX_TOP || s->n_target_top_ids != s->n_target_logprobs * s->target_n_top ||
        s->n_target_top_logprobs != s->n_target_top_ids)
        return err_set(err, errlen, TERN_EPROTO,
                       "peer %s: sampled: %u alternatives (max %d) for %zu scored tokens, but %zu top ids and %zu top "
                       "logprobs", peer, s->target_n_top, TP_MAX_TOP, s->n_target_logprobs, s->n_target_top_ids,
                       s->n_target_top_logprobs);
    if (s->n_top > TP_MAX_TOP || s->n_top_ids != n * s->n_top || s->n_top_logprobs != s->n_top_ids)
        return err_set(err, errlen, TERN_EPROTO,
                       "peer %s: sampled: %u alternatives (max %d) for %zu tokens, but %zu top ids and %zu top logprobs",
                       peer, s->n_top, TP_MAX_TOP, n, s->n_top_ids, s->n_top_logprobs);
    if (s->embd_rows > TP_MAX_TOKENS || s->embd_size > TP_MAX_HIDDEN || (s->embd_rows && !s->embd_size))
        return err_set(err, errlen, TERN_EPROTO, "peer %s: sampled: %u embedding rows of %u (max %u of %u)", peer,
                       s->embd_rows, s->embd_size, TP_MAX_TOKENS, TP_MAX_HIDDEN);
    /* < 2^16 * 2^22 * 4 + 2^16 * 2^18 * 4: no overflow */
    uint64_t want = (uint64_t)n * s->vocab * 4 + (uint64_t)s->embd_rows * s->embd_size * 4;
    if (n > TP_MAX_TOKENS || tb != want)
        return err_set(err, errlen, TERN_EPROTO,
                       "peer %s: sampled: frame is %llu bytes, expected %zu rows x vocab %u x 4 + %u embedding rows x "
                       "%u x 4", peer, (unsigned long long)tb, n, s->vocab, s->embd_rows, s->embd_size);
    return 0;
}

static int check_load(const Tern__LoadShard *l, const char *peer, char *err, size_t errlen) {
    if (!l->model || !str_ok(l->model->hash, 256) || !str_ok(l->model->name, 1024))
        return err_set(err, errlen, TERN_EPROTO, "peer %s: load_shard: missing or oversized model identity", peer);
    if (l->first_layer > l->last_layer || l->last_layer >= 65536)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: load_shard: bad layer range [%u, %u]", peer,
                       l->first_layer, l->last_layer);
    if (!str_ok(l->next_endpoint, 256))
        return err_set(err, errlen, TERN_EPROTO, "peer %s: load_shard: next_endpoint too long", peer);
    if (l->kv_type != TERN__KV_TYPE__KV_F16 && l->kv_type != TERN__KV_TYPE__KV_F32 && l->kv_type != TERN__KV_TYPE__KV_Q8_0)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: load_shard: unknown kv_type %d", peer, (int)l->kv_type);
    if (l->threads_batch > TP_MAX_THREADS)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: load_shard: threads_batch %u (at most %u)", peer,
                       l->threads_batch, TP_MAX_THREADS);
    return 0;
}

/* KvData (kv_data, kv_write): a known kv_type, a sane range and row, and a frame of exactly
 * layers x 2 x n_pos x row_bytes (computed without overflow: every factor is bounded) */
static int check_kv_data(const Tern__KvData *d, uint64_t tb, const char *peer, const char *bn, char *err,
                         size_t errlen) {
    if (d->kv_type != TERN__KV_TYPE__KV_F16 && d->kv_type != TERN__KV_TYPE__KV_F32 && d->kv_type != TERN__KV_TYPE__KV_Q8_0)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: %s: unknown kv_type %d", peer, bn, (int)d->kv_type);
    if (d->last_layer < d->first_layer || d->last_layer - d->first_layer >= 65536 || !d->n_pos ||
        d->n_pos > (1u << 24) || !d->row_bytes || d->row_bytes > TP_MAX_KV_ROW)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: %s: bad layers [%u, %u], %u positions or %llu-byte rows",
                       peer, bn, d->first_layer, d->last_layer, d->n_pos, (unsigned long long)d->row_bytes);
    uint64_t rows = (uint64_t)(d->last_layer - d->first_layer + 1) * 2u * d->n_pos;   /* < 2^41 */
    if (rows > UINT64_MAX / d->row_bytes || rows * d->row_bytes != tb)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: %s: a %llu-byte frame for %llu rows of %llu bytes", peer, bn,
                       (unsigned long long)tb, (unsigned long long)rows, (unsigned long long)d->row_bytes);
    return 0;
}

int tp_msg_check(const Tern__Msg *m, uint64_t tb, const char *peer, char *err, size_t errlen) {
    if (m->version == 0)
        return err_set(err, errlen, TERN_EPROTO, "message from peer %s has no protocol version", peer);
    if (m->version != TERN_PROTO_VERSION)
        return err_set(err, errlen, TERN_EPROTO, "peer %s speaks protocol v%u, this tern speaks v%d", peer,
                       m->version, TERN_PROTO_VERSION);
    if (m->tensor_bytes != tb)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: header declares a %llu-byte tensor, frame has %llu",
                       peer, (unsigned long long)m->tensor_bytes, (unsigned long long)tb);
    const char *bn = tp_body_name(m->body_case);
    int carries = 0;
    switch (m->body_case) {
    case TERN__MSG__BODY_HELLO:
        if (!str_ok(m->hello->node_name, TP_NAME_MAX) || !str_ok(m->hello->isa, 64) ||
            !str_ok(m->hello->model_hash, 256) || !str_ok(m->hello->endpoint, 256) ||
            !str_ok(m->hello->build, 64))
            return err_set(err, errlen, TERN_EPROTO, "peer %s: hello: a string field is too long", peer);
        return tb ? err_set(err, errlen, TERN_EPROTO, "peer %s: hello carries a tensor", peer)
                  : tp_hello_check(m->hello, peer, err, errlen);
    case TERN__MSG__BODY_FORWARD: return check_forward(m->forward, tb, peer, err, errlen);
    case TERN__MSG__BODY_SAMPLED: return check_sampled(m->sampled, tb, peer, err, errlen);
    case TERN__MSG__BODY_LOAD_SHARD:
        if (check_load(m->load_shard, peer, err, errlen)) return TERN_EPROTO;
        break;
    case TERN__MSG__BODY_WEIGHT_CHUNK:
        if (!m->weight_chunk->model || m->weight_chunk->offset > UINT64_MAX - tb || !tb)
            return err_set(err, errlen, TERN_EPROTO, "peer %s: weight_chunk: no model, no bytes or offset overflow", peer);
        carries = 1;
        break;
    case TERN__MSG__BODY_WEIGHT_REQUEST:
        if (!m->weight_request->model || !m->weight_request->length ||
            m->weight_request->offset > UINT64_MAX - m->weight_request->length)
            return err_set(err, errlen, TERN_EPROTO, "peer %s: weight_request: no model, empty or overflowing range", peer);
        break;
    case TERN__MSG__BODY_ERROR:
        if (!str_ok(m->error->node, TP_NAME_MAX) || !str_ok(m->error->message, 4096))
            return err_set(err, errlen, TERN_EPROTO, "peer %s: error: a string field is too long", peer);
        break;
    case TERN__MSG__BODY_KV_DATA: return check_kv_data(m->kv_data, tb, peer, bn, err, errlen);
    case TERN__MSG__BODY_KV_WRITE: return check_kv_data(m->kv_write, tb, peer, bn, err, errlen);
    case TERN__MSG__BODY_HELLO_ACK: case TERN__MSG__BODY_REFUSE: case TERN__MSG__BODY_SHARD_READY:
    case TERN__MSG__BODY_FREE_SEQUENCE: case TERN__MSG__BODY_HEARTBEAT: case TERN__MSG__BODY_SHUTDOWN:
    case TERN__MSG__BODY_KV_READ: case TERN__MSG__BODY_KV_DONE:
        break;
    default:
        return err_set(err, errlen, TERN_EPROTO, "message from peer %s has no body known to protocol v%d",
                       peer, TERN_PROTO_VERSION);
    }
    if (!carries && tb)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: %s carries an unexpected %llu-byte tensor", peer, bn,
                       (unsigned long long)tb);
    return 0;
}

/* ---- decode ---------------------------------------------------------------------------- */

#define TP_MAX_HEADER (8u << 20)   /* 65536 tokens of Forward metadata fit with room to spare */

static int tensor_copy(tp_msg_t *out, const void *p, size_t n, char *err, size_t errlen) {
    if (n > out->cap) {
        void *b = tern_alloc(n);
        if (!b) return err_set(err, errlen, TERN_ENOMEM, "no memory for a %zu-byte tensor frame", n);
        tern_free(out->buf);
        out->buf = b;
        out->cap = n;
    }
    if (n) memcpy(out->buf, p, n);
    out->tensor = n ? out->buf : NULL;
    out->tensor_bytes = n;
    return 0;
}

int tp_frames_decode(tp_msg_t *out, const tp_iov_t *fr, int nfr, const char *peer,
                     uint64_t max_frame, char *err, size_t errlen) {
    out->msg = NULL;
    out->tensor = NULL;
    out->tensor_bytes = 0;
    tp_arena_t *a = msg_arena(out);
    if (!a) return err_set(err, errlen, TERN_ENOMEM, "no memory to decode a message");
    arena_reset(a);
    if (nfr < 1) return err_set(err, errlen, TERN_EFORMAT, "empty message from peer %s", peer);
    if (fr[0].n > TP_MAX_HEADER)
        return err_set(err, errlen, TERN_EFORMAT, "peer %s: %zu-byte header frame (max %u)", peer, fr[0].n,
                       TP_MAX_HEADER);
    ProtobufCAllocator al = {arena_alloc, arena_free, a};
    Tern__Msg *m = tern__msg__unpack(&al, fr[0].n, fr[0].p);
    if (!m) return err_set(err, errlen, TERN_EFORMAT, "undecodable frame (%zu bytes) from peer %s", fr[0].n, peer);
    if (m->version != TERN_PROTO_VERSION)   /* before anything else: a v2 frame may mean other things */
        return tp_msg_check(m, m->tensor_bytes, peer, err, errlen);
    if (m->tensor_bytes > max_frame)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: %llu-byte tensor exceeds the %llu-byte limit", peer,
                       (unsigned long long)m->tensor_bytes, (unsigned long long)max_frame);
    if (nfr > 2)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: extra frames after %s (at most 2 expected)", peer,
                       tp_body_name(m->body_case));
    if (m->tensor_bytes && nfr < 2)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: %s declares a %llu-byte tensor frame but none followed",
                       peer, tp_body_name(m->body_case), (unsigned long long)m->tensor_bytes);
    if (!m->tensor_bytes && nfr == 2)
        return err_set(err, errlen, TERN_EPROTO, "peer %s: %s declares no tensor but a %zu-byte frame followed",
                       peer, tp_body_name(m->body_case), fr[1].n);
    uint64_t tb = nfr == 2 ? fr[1].n : 0;
    int rc = tp_msg_check(m, tb, peer, err, errlen);
    if (rc) return rc;
    if (nfr == 2 && (rc = tensor_copy(out, fr[1].p, fr[1].n, err, errlen))) return rc;
    out->msg = m;
    return 0;
}

/* ---- pack ------------------------------------------------------------------------------ */

size_t tp_pack(tp_conn_t *c, const Tern__Msg *m, uint64_t tensor_bytes, const uint8_t **out) {
    Tern__Msg e = *m;
    e.version = TERN_PROTO_VERSION;
    e.tensor_bytes = tensor_bytes;
    size_t n = tern__msg__get_packed_size(&e);
    if (n > c->pack_cap) {
        uint8_t *b = realloc(c->pack, n);
        if (!b) return 0;
        c->pack = b;
        c->pack_cap = n;
    }
    size_t w = tern__msg__pack(&e, c->pack);
    TERN_ASSERT(w == n);
    *out = c->pack;
    return n;
}

/* ---- conns ----------------------------------------------------------------------------- */

static const tp_ops_t *ops_for(const char *ep) {
    if (!strncmp(ep, "tcp://", 6) || !strncmp(ep, "ipc://", 6)) return &tp_zmq_ops;
    if (!strncmp(ep, "inproc://", 9)) return &tp_inproc_ops;
#ifdef TERN_HAVE_MPI
    if (!strncmp(ep, "mpi://", 6)) return &tp_mpi_ops;
#endif
    return NULL;
}

static int name_ok(const char *s) {
    size_t n = strlen(s);
    if (n >= TP_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~') return 0;
    return 1;
}

/* conns open in this process: tp_term leaves the shared state alone while any is */
static pthread_mutex_t g_open_mu = PTHREAD_MUTEX_INITIALIZER;
static long g_open;

static int conn_open(tp_conn_t **out, int listen, const char *ep, const tp_opts_t *o, char *err,
                     size_t errlen) {
    static const tp_opts_t defaults;
    TERN_ASSERT(out && ep);
    *out = NULL;
    if (!o) o = &defaults;
    const tp_ops_t *ops = ops_for(ep);
    if (!ops) return err_set(err, errlen, TERN_EINVAL, "endpoint '%s': scheme must be tcp://, ipc://, inproc://%s", ep,
                                  TP_HAVE_MPI ? " or mpi://" : " (mpi:// needs a build with MPI)");
    if (strlen(ep) >= sizeof((tp_conn_t *)0)->endpoint)
        return err_set(err, errlen, TERN_EINVAL, "endpoint '%.40s...' is too long", ep);
    if (o->name && *o->name && !name_ok(o->name))
        return err_set(err, errlen, TERN_EINVAL, "node name '%s': 1-%d printable characters, no spaces", o->name,
                       TP_NAME_MAX - 1);
    if (o->send_timeout_ms < 0 || o->hwm < 0)
        return err_set(err, errlen, TERN_EINVAL, "negative send timeout or high-water mark");
    tp_conn_t *c = calloc(1, sizeof *c);
    if (!c) return err_set(err, errlen, TERN_ENOMEM, "no memory for a connection");
    c->ops = ops;
    c->listening = listen;
    snprintf(c->endpoint, sizeof c->endpoint, "%s", ep);
    snprintf(c->name, sizeof c->name, "%s", o->name ? o->name : "");
    snprintf(c->peer.name, sizeof c->peer.name, "%s", o->peer_name && *o->peer_name ? o->peer_name : ep);
    c->send_timeout_ms = o->send_timeout_ms ? o->send_timeout_ms : TP_DEFAULT_SEND_TIMEOUT_MS;
    c->hwm = o->hwm ? o->hwm : TP_DEFAULT_HWM;
    c->max_frame = o->max_frame_bytes ? o->max_frame_bytes : TP_DEFAULT_MAX_FRAME;
    int rc = 0;
    if (o->curve && ops == &tp_zmq_ops) {
        c->has_curve = 1;
        c->curve = *o->curve;
        c->curve.allowed = NULL;
        if (o->curve->n_allowed > 0) {
            c->curve_allowed = calloc((size_t)o->curve->n_allowed, TP_KEY_Z85);
            if (!c->curve_allowed) {
                rc = err_set(err, errlen, TERN_ENOMEM, "no memory for CURVE keys");
                goto fail;
            }
            memcpy(c->curve_allowed, o->curve->allowed, (size_t)o->curve->n_allowed * TP_KEY_Z85);
            c->curve.allowed = (const char(*)[TP_KEY_Z85])c->curve_allowed;
        }
    }
    pthread_mutex_lock(&g_open_mu);
    rc = ops->open(c, listen, err, errlen);
    if (!rc) g_open++;
    pthread_mutex_unlock(&g_open_mu);
    if (rc) goto fail;
    *out = c;
    return 0;
fail:
    free(c->curve_allowed);
    free(c);
    return rc;
}

int tp_listen(tp_conn_t **c, const char *endpoint, const tp_opts_t *o, char *err, size_t errlen) {
    return conn_open(c, 1, endpoint, o, err, errlen);
}

int tp_connect(tp_conn_t **c, const char *endpoint, const tp_opts_t *o, char *err, size_t errlen) {
    return conn_open(c, 0, endpoint, o, err, errlen);
}

void tp_close(tp_conn_t **pc) {
    if (!pc || !*pc) return;
    tp_conn_t *c = *pc;
    c->ops->close(c);
    pthread_mutex_lock(&g_open_mu);
    g_open--;
    pthread_mutex_unlock(&g_open_mu);
    free(c->curve_allowed);
    free(c->pack);
    free(c);
    *pc = NULL;
}

const char *tp_endpoint(const tp_conn_t *c) {
    return c->endpoint;
}

int tp_send(tp_conn_t *c, const tp_peer_t *to, const Tern__Msg *m, const void *tensor,
            size_t tensor_bytes, char *err, size_t errlen) {
    TERN_ASSERT(c && m);
    TERN_ASSERT(c->listening ? to != NULL : to == NULL);
    TERN_ASSERT(tensor || !tensor_bytes);
    const char *peer = to ? to->name : c->peer.name;
    Tern__Msg e = *m;
    e.version = TERN_PROTO_VERSION;
    e.tensor_bytes = tensor_bytes;
    char why[256];
    if (tp_msg_check(&e, tensor_bytes, peer, why, sizeof why))
        return err_set(err, errlen, TERN_EINVAL, "refusing to send an invalid %s: %s", tp_body_name(m->body_case), why);
    if (tensor_bytes > c->max_frame)
        return err_set(err, errlen, TERN_EINVAL, "refusing to send a %zu-byte tensor (limit %llu)", tensor_bytes,
                       (unsigned long long)c->max_frame);
    const uint8_t *hdr;
    size_t n = tp_pack(c, &e, tensor_bytes, &hdr);
    if (!n) return err_set(err, errlen, TERN_ENOMEM, "no memory to encode a %s", tp_body_name(m->body_case));
    return c->ops->send(c, to, hdr, n, tensor, tensor_bytes, err, errlen);
}

int tp_recv(tp_conn_t *c, tp_msg_t *out, int timeout_ms, char *err, size_t errlen) {
    TERN_ASSERT(c && out && timeout_ms >= 0);
    out->msg = NULL;
    out->tensor = NULL;
    out->tensor_bytes = 0;
    if (!c->listening) out->from = c->peer;
    return c->ops->recv(c, out, timeout_ms, err, errlen);
}

int tp_poll(tp_conn_t *const *conns, int n, int timeout_ms, int *ready, char *err, size_t errlen) {
    TERN_ASSERT(n > 0 && n <= TP_MAX_POLL && timeout_ms >= 0);
    for (int i = 1; i < n; i++) TERN_ASSERT(conns[i]->ops->poll == conns[0]->ops->poll);
    return conns[0]->ops->poll(conns, n, timeout_ms, ready, err, errlen);
}

int tp_send_shutdown(const char *endpoint, const char *reason, int send_timeout_ms, char *err, size_t errlen) {
    tp_conn_t *c = NULL;
    tp_opts_t o = {0};
    o.send_timeout_ms = send_timeout_ms;
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Shutdown sd = TERN__SHUTDOWN__INIT;
    sd.reason = (char *)reason;
    m.body_case = TERN__MSG__BODY_SHUTDOWN;
    m.shutdown = &sd;
    int rc = tp_connect(&c, endpoint, &o, err, errlen);
    if (rc == 0) rc = tp_send(c, NULL, &m, NULL, 0, err, errlen);
    tp_close(&c);
    return rc;
}

int tp_answer_heartbeat(tp_conn_t *c, const tp_msg_t *ping, char *err, size_t errlen) {
    TERN_ASSERT(ping->msg && ping->msg->body_case == TERN__MSG__BODY_HEARTBEAT);
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Heartbeat hb = TERN__HEARTBEAT__INIT;
    hb.seq = ping->msg->heartbeat->seq;
    hb.time_us = (uint64_t)(time_now() * 1e6);
    m.body_case = TERN__MSG__BODY_HEARTBEAT;
    m.heartbeat = &hb;
    return tp_send(c, &ping->from, &m, NULL, 0, err, errlen);
}

void tp_term(void) {
    pthread_mutex_lock(&g_open_mu);
    if (g_open == 0) {   /* else another user of the transport (an embedded worker, a second
                          * engine) still has conns: the last tp_term after them does it */
        curve_zap_stop();
        tp_zmq_term();
    }
    pthread_mutex_unlock(&g_open_mu);
}
