/* cmocka_or_shim.h: <cmocka.h>, or with -DTERN_CMOCKA_SHIM a minimal stand-in for hosts
 * without the library (the aarch64 cross build in .ci/neon.sh): the assertion macros the kernel
 * tests use, a failed assertion ends that test, a final tally line. Include after <setjmp.h>,
 * <stdarg.h>, <stddef.h>, <stdint.h>, <stdio.h>, <string.h>. */
#ifndef TERN_CMOCKA_OR_SHIM_H
#define TERN_CMOCKA_OR_SHIM_H
#ifndef TERN_CMOCKA_SHIM
#include <cmocka.h>
#else
static jmp_buf g_shim_jmp;
static void shim_fail(const char *file, int line, const char *what) {
    fprintf(stderr, "%s:%d: failure: %s\n", file, line, what);
    longjmp(g_shim_jmp, 1);
}
static void shim_int_eq(long long a, long long b, const char *file, int line) {
    if (a == b) return;
    fprintf(stderr, "%s:%d: %lld != %lld\n", file, line, a, b);
    longjmp(g_shim_jmp, 1);
}
#define print_error(...) fprintf(stderr, __VA_ARGS__)
#define print_message(...) printf(__VA_ARGS__)
#define fail() shim_fail(__FILE__, __LINE__, "fail()")
#define fail_msg(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr), shim_fail(__FILE__, __LINE__, "fail_msg"))
#define assert_true(c) ((c) ? (void)0 : shim_fail(__FILE__, __LINE__, #c))
#define assert_non_null(p) assert_true((p) != NULL)
#define assert_null(p) assert_true((p) == NULL)
#define assert_string_equal(a, b) assert_true(strcmp((a), (b)) == 0)
#define assert_int_equal(a, b) shim_int_eq((long long)(a), (long long)(b), __FILE__, __LINE__)
#define assert_memory_equal(a, b, n) assert_true(memcmp((a), (b), (n)) == 0)
struct CMUnitTest {
    const char *name;
    void (*fn)(void **);
};
#define cmocka_unit_test(f) {#f, f}
static int shim_run(const struct CMUnitTest *t, size_t n) {
    volatile int failed = 0;
    for (volatile size_t i = 0; i < n; i++) {
        printf("[ RUN      ] %s\n", t[i].name);
        fflush(stdout);
        if (setjmp(g_shim_jmp) == 0) {
            t[i].fn(NULL);
            printf("[       OK ] %s\n", t[i].name);
        } else {
            printf("[  FAILED  ] %s\n", t[i].name);
            failed++;
        }
    }
    printf("%d passed, %d failed\n", (int)n - failed, failed);
    return failed;
}
#define cmocka_run_group_tests(t, s, td) shim_run((t), sizeof(t) / sizeof((t)[0]))
#endif
#endif
