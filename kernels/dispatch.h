/* dispatch: which instruction set the kernels use, decided once at start-up from CPU
 * detection (__builtin_cpu_supports) or forced with TERN_ISA=ref|avx2|avx512|neon.
 * Kernel families keep their own const tables of function pointers indexed by isa. */
#ifndef TERN_DISPATCH_H
#define TERN_DISPATCH_H

enum isa {
    ISA_REF = 0,       /* portable C: the spec */
    ISA_AVX2 = 1,      /* AVX2 + FMA + F16C */
    ISA_AVX512 = 2,    /* AVX-512 F/BW/VL/DQ + VNNI */
    ISA_NEON = 3,      /* aarch64 NEON (+ dotprod when present) */
    ISA_COUNT = 4
};

int isa_best(void);                /* best the CPU supports (ignores TERN_ISA) */
int isa_current(void);             /* TERN_ISA if set and supported, else isa_best(); cached */
void isa_force(int isa);           /* tests and benches; must be supported */
int isa_supported(int isa);
const char *isa_name(int isa);     /* "ref" "avx2" "avx512" "neon" */
int isa_from_name(const char *s);  /* -1 when unknown */
int isa_has_neon_dotprod(void);

#endif
