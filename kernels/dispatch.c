/* dispatch: CPU detection and the TERN_ISA override. */
#include "kernels/dispatch.h"
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

static atomic_int g_isa = -1;   /* threads may race to set it first: the same value */

int isa_supported(int isa) {
    switch (isa) {
    case ISA_REF: return 1;
#if defined(TERN_HAVE_X86)
    case ISA_AVX2:
        __builtin_cpu_init();
        /* every AVX2 CPU (Haswell, Zen and later) has F16C; clang 14 cannot test for it */
        return !!__builtin_cpu_supports("avx2") && !!__builtin_cpu_supports("fma");
    case ISA_AVX512:
        __builtin_cpu_init();
        return isa_supported(ISA_AVX2) && !!__builtin_cpu_supports("avx512f") &&
               !!__builtin_cpu_supports("avx512bw") && !!__builtin_cpu_supports("avx512vl") &&
               !!__builtin_cpu_supports("avx512dq") && !!__builtin_cpu_supports("avx512vnni");
#endif
#if defined(TERN_HAVE_ARM)
    case ISA_NEON: return 1;
#endif
    default: return 0;
    }
}

int isa_has_neon_dotprod(void) {
#if defined(__aarch64__) && defined(__linux__)
    return !!(getauxval(AT_HWCAP) & HWCAP_ASIMDDP);
#else
    return 0;
#endif
}

int isa_best(void) {
    for (int i = ISA_COUNT - 1; i > 0; i--)
        if (isa_supported(i)) return i;
    return ISA_REF;
}

static const char *g_names[ISA_COUNT] = {"ref", "avx2", "avx512", "neon"};

const char *isa_name(int isa) { return isa >= 0 && isa < ISA_COUNT ? g_names[isa] : "?"; }

int isa_from_name(const char *s) {
    for (int i = 0; i < ISA_COUNT; i++)
        if (s && strcmp(s, g_names[i]) == 0) return i;
    return -1;
}

int isa_current(void) {
    int cur = atomic_load_explicit(&g_isa, memory_order_relaxed);
    if (cur >= 0) return cur;
    int isa = isa_best();
    const char *env = getenv("TERN_ISA");
    if (env && *env) {
        int want = isa_from_name(env);
        if (want < 0 || !isa_supported(want))
            fprintf(stderr, "tern: TERN_ISA=%s is not available on this CPU; using %s\n", env, isa_name(isa));
        else
            isa = want;
    }
    atomic_store_explicit(&g_isa, isa, memory_order_relaxed);
    return isa;
}

void isa_force(int isa) {
    if (isa_supported(isa)) atomic_store_explicit(&g_isa, isa, memory_order_relaxed);
}
