/* opt: table-driven parsing. Environment mirrors are applied first, then argv, so a flag
 * given on the command line overrides its TERN_ARG_* variable. */
#include "core/opt.h"
#include "core/err.h"
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void env_name(const char *lng, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "TERN_ARG_");
    for (const char *p = lng + 2; *p && n + 1 < cap; p++)
        buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[n] = 0;
}

int opt_parse_size(const char *s, unsigned long long *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0 || !isfinite(v)) return TERN_EINVAL;
    double mul = 1;
    while (*end == ' ') end++;
    switch (toupper((unsigned char)*end)) {
    case 0: break;
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    case 'B': break;
    default: return TERN_EINVAL;
    }
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return TERN_EINVAL;
    v *= mul;
    if (v > 1.8e19) return TERN_EINVAL;
    *out = (unsigned long long)v;
    return 0;
}

static const char *opt_label(const opt_t *o) { return o->lng ? o->lng : o->shrt; }

static int set_value(const opt_t *o, const char *val, const char *src, char *err, size_t errlen) {
    char *end;
    switch (o->kind) {
    case OPT_FLAG: {
        if (!val) { *(int *)o->dst = 1; return 0; }
        if (!strcmp(val, "1") || !strcasecmp(val, "true") || !strcasecmp(val, "on")) *(int *)o->dst = 1;
        else if (!strcmp(val, "0") || !strcasecmp(val, "false") || !strcasecmp(val, "off")) *(int *)o->dst = 0;
        else return err_set(err, errlen, TERN_EINVAL, "%s %s: expected a boolean, got '%s'", src, opt_label(o), val);
        return 0;
    }
    case OPT_INT:
    case OPT_I64: {
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (end == val || *end || errno)
            return err_set(err, errlen, TERN_EINVAL, "%s %s: expected an integer, got '%s'", src, opt_label(o), val);
        if (o->min < o->max && (v < o->min || v > o->max))
            return err_set(err, errlen, TERN_EINVAL, "%s %s: %lld is out of range [%.0f, %.0f]", src, opt_label(o), v,
                           o->min, o->max);
        if (o->kind == OPT_INT) {
            if (v < INT32_MIN || v > INT32_MAX)
                return err_set(err, errlen, TERN_EINVAL, "%s %s: %lld is too large", src, opt_label(o), v);
            *(int *)o->dst = (int)v;
        } else {
            *(int64_t *)o->dst = v;
        }
        return 0;
    }
    case OPT_FLOAT: {
        errno = 0;
        double v = strtod(val, &end);
        if (end == val || *end || errno || !isfinite(v))
            return err_set(err, errlen, TERN_EINVAL, "%s %s: expected a number, got '%s'", src, opt_label(o), val);
        if (o->min < o->max && (v < o->min || v > o->max))
            return err_set(err, errlen, TERN_EINVAL, "%s %s: %g is out of range [%g, %g]", src, opt_label(o), v, o->min,
                           o->max);
        *(float *)o->dst = (float)v;
        return 0;
    }
    case OPT_SIZE: {
        unsigned long long v;
        if (opt_parse_size(val, &v) < 0)
            return err_set(err, errlen, TERN_EINVAL, "%s %s: expected a size like 512M or 12GiB, got '%s'", src,
                           opt_label(o), val);
        *(uint64_t *)o->dst = v;
        return 0;
    }
    case OPT_STRS: {
        opt_strs_t *l = o->dst;
        if (l->n == OPT_STRS_MAX)
            return err_set(err, errlen, TERN_EINVAL, "%s %s: given more than %d times", src, opt_label(o), OPT_STRS_MAX);
        l->v[l->n++] = val;
        return 0;
    }
    default:
        *(const char **)o->dst = val;
        return 0;
    }
}

static const opt_t *find(const opt_t *opts, const char *name, size_t len) {
    for (const opt_t *o = opts; o->kind || o->dst; o++) {
        if (o->shrt && strlen(o->shrt) == len && !strncmp(o->shrt, name, len)) return o;
        if (o->lng && strlen(o->lng) == len && !strncmp(o->lng, name, len)) return o;
    }
    return NULL;
}

int opt_parse(const opt_t *opts, int argc, char **argv, char **pos, int max_pos, int *npos, char *err,
              size_t errlen) {
    int rc;
    *npos = 0;
    for (const opt_t *o = opts; o->kind || o->dst; o++) {
        if (!o->lng) continue;
        char name[96];
        env_name(o->lng, name, sizeof name);
        const char *v = getenv(name);
        if (v && (rc = set_value(o, o->kind == OPT_FLAG && !*v ? NULL : v, name, err, errlen)) < 0) return rc;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 1;
        if (!strcmp(a, "--")) {
            for (i++; i < argc; i++) {
                if (*npos >= max_pos) return err_set(err, errlen, TERN_EINVAL, "too many arguments: '%s'", argv[i]);
                pos[(*npos)++] = argv[i];
            }
            break;
        }
        if (a[0] != '-' || a[1] == 0 || (isdigit((unsigned char)a[1]) && !find(opts, a, strlen(a)))) {
            if (*npos >= max_pos) return err_set(err, errlen, TERN_EINVAL, "unexpected argument '%s'", a);
            pos[(*npos)++] = argv[i];
            continue;
        }
        const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const opt_t *o = find(opts, a, len);
        if (!o) return err_set(err, errlen, TERN_EINVAL, "unknown option '%.*s' (see --help)", (int)len, a);
        const char *val = NULL;
        if (eq) val = eq + 1;
        else if (o->kind != OPT_FLAG) {
            if (i + 1 >= argc) return err_set(err, errlen, TERN_EINVAL, "option %s needs a value (%s)", a,
                                              o->metavar ? o->metavar : "VALUE");
            val = argv[++i];
        }
        if ((rc = set_value(o, val, "option", err, errlen)) < 0) return rc;
    }
    return 0;
}

static void default_str(const opt_t *o, char *buf, size_t cap) {
    buf[0] = 0;
    switch (o->kind) {
    case OPT_INT: snprintf(buf, cap, "%d", *(int *)o->dst); break;
    case OPT_I64: snprintf(buf, cap, "%" PRId64, *(int64_t *)o->dst); break;
    case OPT_FLOAT: snprintf(buf, cap, "%g", *(float *)o->dst); break;
    case OPT_SIZE: if (*(uint64_t *)o->dst) snprintf(buf, cap, "%" PRIu64, *(uint64_t *)o->dst); break;
    case OPT_STR:
    case OPT_LIST:
        if (*(const char **)o->dst) snprintf(buf, cap, "%s", *(const char **)o->dst);
        break;
    default: break;
    }
}

void opt_help(FILE *f, const char *usage, const opt_t *opts) {
    fprintf(f, "usage: %s\n\noptions:\n", usage);
    for (const opt_t *o = opts; o->kind || o->dst; o++) {
        char left[80], def[128], env[96] = "";
        snprintf(left, sizeof left, "%s%s%s%s%s", o->shrt ? o->shrt : "", o->shrt && o->lng ? ", " : "",
                 o->lng ? o->lng : "", o->metavar ? " " : "", o->metavar ? o->metavar : "");
        default_str(o, def, sizeof def);
        if (o->lng) env_name(o->lng, env, sizeof env);
        fprintf(f, "  %-28s %s", left, o->help ? o->help : "");
        if (def[0]) fprintf(f, " (default: %s)", def);
        if (env[0]) fprintf(f, " [env %s]", env);
        fputc('\n', f);
    }
    fprintf(f, "  %-28s %s\n", "-h, --help", "show this help");
}
