/* test_cluster_file: the YAML cluster file and the --workers list.
 * Valid files of each form parse to the expected struct; every rejection rule is checked for
 * the exact "file:line: key:" prefix of its message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "coordinator/cluster_file.h"
#include "core/err.h"

#define GIB (1024ull * 1024 * 1024)

static int parse(const char *yaml, cluster_t *c, char *err, size_t errlen) {
    return cluster_file_parse(c, yaml, strlen(yaml), "t.yaml", err, errlen);
}

/* yaml must fail with a message starting "t.yaml:<line>: <key>: " (key NULL: "t.yaml:<line>: ")
 * and containing what */
static void expect_fail_at(const char *yaml, int line, const char *key, const char *what, const char *where) {
    cluster_t c;
    char err[512] = "", prefix[160];
    int rc = parse(yaml, &c, err, sizeof err);
    if (key) snprintf(prefix, sizeof prefix, "t.yaml:%d: %s: ", line, key);
    else snprintf(prefix, sizeof prefix, "t.yaml:%d: ", line);
    if (rc != TERN_EFORMAT || strncmp(err, prefix, strlen(prefix)) || !strstr(err, what) || strchr(err, '\n')) {
        print_error("%s: rc=%d err='%s'\n  want prefix '%s' and '%s'\n  yaml:\n%.300s\n", where, rc, err, prefix, what, yaml);
        fail();
    }
    assert_null(c.workers);   /* left zeroed */
    assert_int_equal(c.n_workers, 0);
    cluster_free(&c);
}
#define expect_fail(y, l, k, w) expect_fail_at(y, l, k, w, #y)

static void expect_ok(const char *yaml, cluster_t *c) {
    char err[512] = "";
    int rc = parse(yaml, c, err, sizeof err);
    if (rc) {
        print_error("unexpected failure %d: %s\n%s\n", rc, err, yaml);
        fail();
    }
}

static const char *design_example =
    "model: models/bitnet-2b4t-i2_s.gguf\n"
    "transport: zmq                 # zmq | mpi\n"
    "coordinator: { listen: \"tcp://0.0.0.0:7100\", http: \"127.0.0.1:8080\" }\n"
    "security: { curve: true, keys: deploy/keys }   # tern keygen\n"
    "heartbeat: { interval_ms: 250, timeout_ms: 2000 }\n"
    "workers:\n"
    "  - { name: pc1, endpoint: \"tcp://192.168.1.21:7101\", threads: 4, memory: 12GiB }\n"
    "  - { name: pc2, endpoint: \"tcp://192.168.1.22:7101\", layers: [15, 29] }\n"
    "  - { name: spare, endpoint: \"tcp://192.168.1.23:7101\", standby: true }\n";

static void test_design_example(void **state) {
    (void)state;
    cluster_t c;
    expect_ok(design_example, &c);
    assert_string_equal(c.name, "t.yaml");
    assert_string_equal(c.model, "models/bitnet-2b4t-i2_s.gguf");
    assert_int_equal(c.transport, CLUSTER_TRANSPORT_ZMQ);
    assert_string_equal(c.listen, "tcp://0.0.0.0:7100");
    assert_string_equal(c.http, "127.0.0.1:8080");
    assert_int_equal(c.curve, 1);
    assert_string_equal(c.keys, "deploy/keys");
    assert_int_equal(c.heartbeat_interval_ms, 250);
    assert_int_equal(c.heartbeat_timeout_ms, 2000);
    assert_int_equal(c.n_workers, 3);
    cluster_worker_t *w = c.workers;
    assert_string_equal(w[0].name, "pc1");
    assert_string_equal(w[0].endpoint, "tcp://192.168.1.21:7101");
    assert_int_equal(w[0].threads, 4);
    assert_true(w[0].memory == 12 * GIB);
    assert_int_equal(w[0].memory_line, 7);
    assert_int_equal(w[0].first, -1);
    assert_int_equal(w[0].last, -1);
    assert_int_equal(w[0].standby, 0);
    assert_int_equal(w[0].line, 7);
    assert_string_equal(w[1].name, "pc2");
    assert_int_equal(w[1].threads, 0);
    assert_true(w[1].memory == 0);
    assert_int_equal(w[1].first, 15);
    assert_int_equal(w[1].last, 29);
    assert_int_equal(w[1].line, 8);
    assert_int_equal(w[1].layers_line, 8);
    assert_string_equal(w[2].name, "spare");
    assert_int_equal(w[2].standby, 1);
    assert_int_equal(w[2].line, 9);
    assert_int_equal(cluster_find_worker(&c, "pc2"), 1);
    assert_int_equal(cluster_find_worker(&c, "nope"), -1);
    cluster_free(&c);
    assert_null(c.workers);
    cluster_free(&c);   /* twice is fine */
}

static void test_block_style_and_defaults(void **state) {
    (void)state;
    cluster_t c;
    expect_ok("# a comment\n"
              "workers:\n"
              "  - endpoint: tcp://a.local:7101\n"
              "    memory: '1.5G'\n"
              "  - name: b\n"
              "    endpoint: ipc:///tmp/tern-b.sock\n"
              "    layers:\n"
              "      - 3\n"
              "      - 7\n"
              "  - endpoint: \"tcp://[::1]:7103\"\n"
              "    standby: false\n",
              &c);
    assert_null(c.model);
    assert_int_equal(c.transport, CLUSTER_TRANSPORT_ZMQ);
    assert_string_equal(c.listen, "tcp://0.0.0.0:7100");
    assert_string_equal(c.http, "127.0.0.1:8080");
    assert_int_equal(c.curve, 0);
    assert_null(c.keys);
    assert_int_equal(c.heartbeat_interval_ms, 500);
    assert_int_equal(c.heartbeat_timeout_ms, 3000);
    assert_int_equal(c.n_workers, 3);
    assert_string_equal(c.workers[0].name, "w0");
    assert_int_equal(c.workers[0].line, 3);
    assert_int_equal(c.workers[0].memory_line, 4);
    assert_true(c.workers[0].memory == (uint64_t)(1.5 * GIB));
    assert_string_equal(c.workers[1].endpoint, "ipc:///tmp/tern-b.sock");
    assert_int_equal(c.workers[1].first, 3);
    assert_int_equal(c.workers[1].last, 7);
    assert_int_equal(c.workers[1].layers_line, 8);
    assert_string_equal(c.workers[2].name, "w2");
    assert_string_equal(c.workers[2].endpoint, "tcp://[::1]:7103");
    cluster_free(&c);
}

static void test_mpi_without_endpoints(void **state) {
    (void)state;
    cluster_t c;
    expect_ok("transport: mpi\nworkers:\n  - {threads: 8}\n  - {name: b, threads: 8, layers: [0, 0]}\n", &c);
    assert_int_equal(c.transport, CLUSTER_TRANSPORT_MPI);
    assert_int_equal(c.n_workers, 2);
    assert_null(c.workers[0].endpoint);
    assert_int_equal(c.workers[1].first, 0);
    assert_int_equal(c.workers[1].last, 0);
    cluster_free(&c);
    /* the same with zmq needs endpoints */
    expect_fail("transport: zmq\nworkers:\n  - {threads: 8}\n", 3, "workers[0].endpoint", "missing");
}

static void test_error_message_exact(void **state) {
    (void)state;
    cluster_t c;
    char err[256];
    const char *y = "model: m.gguf\n"
                    "transport: zmq\n"
                    "coordinator: { listen: \"tcp://0.0.0.0:7100\" }\n"
                    "\n"
                    "workers:\n"
                    "  - { name: pc1, endpoint: \"tcp://192.168.1.21:7101\", threads: 4, memory: 12GiB }\n"
                    "  - { name: pc2, endpoint: \"tcp://192.168.1.22:7101\", memory: lots }\n";
    assert_int_equal(cluster_file_parse(&c, y, strlen(y), "cluster.yaml", err, sizeof err), TERN_EFORMAT);
    assert_string_equal(err, "cluster.yaml:7: workers[1].memory: expected a size like 12GiB, got 'lots'");
}

static void test_reject_unknown_keys(void **state) {
    (void)state;
    expect_fail("model: m\nmodle: m\nworkers: [{endpoint: tcp://a:1}]\n", 2, "modle", "unknown key");
    expect_fail("workers:\n  - endpoint: tcp://a:1\n    speed: 20\n", 3, "workers[0].speed", "unknown key (expected one of: name,");
    expect_fail("coordinator: {listen: tcp://a:1, port: 3}\nworkers: [{endpoint: tcp://a:1}]\n", 1, "coordinator.port", "unknown key");
    expect_fail("security: {crv: true}\nworkers: [{endpoint: tcp://a:1}]\n", 1, "security.crv", "unknown key");
    expect_fail("heartbeat: {every: 5}\nworkers: [{endpoint: tcp://a:1}]\n", 1, "heartbeat.every", "unknown key");
}

static void test_reject_wrong_types(void **state) {
    (void)state;
    expect_fail("model: [a, b]\nworkers: [{endpoint: tcp://a:1}]\n", 1, "model", "expected a string, got a list");
    expect_fail("model:\nworkers: [{endpoint: tcp://a:1}]\n", 1, "model", "expected a string, got nothing");
    expect_fail("workers: [{endpoint: tcp://a:1, threads: four}]\n", 1, "workers[0].threads", "expected an integer, got 'four'");
    expect_fail("workers: [{endpoint: tcp://a:1, threads: \"4\"}]\n", 1, "workers[0].threads", "expected an integer");
    expect_fail("workers: [{endpoint: tcp://a:1, threads: 4.5}]\n", 1, "workers[0].threads", "expected an integer");
    expect_fail("workers: [{endpoint: tcp://a:1, standby: yes}]\n", 1, "workers[0].standby", "expected true or false, got 'yes'");
    expect_fail("workers: [{endpoint: {a: 1}}]\n", 1, "workers[0].endpoint", "expected a string, got a mapping");
    expect_fail("workers: [{endpoint: tcp://a:1, name: \"\"}]\n", 1, "workers[0].name", "must not be empty");
    expect_fail("workers: [{endpoint: tcp://a:1, name: \"a\\0b\"}]\n", 1, "workers[0].name", "NUL");
    expect_fail("workers: [{endpoint: tcp://a:1, name: \"a\\nb\"}]\n", 1, "workers[0].name", "control characters");
    expect_fail("workers:\n  - {endpoint: \"tcp://a:1\n\n  x\"}\n", 2, "workers[0].endpoint", "control characters");
    expect_fail("coordinator: tcp://a:1\nworkers: [{endpoint: tcp://a:1}]\n", 1, "coordinator", "expected a mapping, got 'tcp://a:1'");
    expect_fail("security: {curve: 1, keys: k}\nworkers: [{endpoint: tcp://a:1}]\n", 1, "security.curve", "expected true or false");
    expect_fail("heartbeat: {interval_ms: fast}\nworkers: [{endpoint: tcp://a:1}]\n", 1, "heartbeat.interval_ms", "expected an integer");
    expect_fail("transport: tcp\nworkers: [{endpoint: tcp://a:1}]\n", 1, "transport", "expected zmq or mpi, got 'tcp'");
    expect_fail("workers: tcp://a:1\n", 1, "workers", "expected a list of workers");
    expect_fail("workers:\n  - tcp://a:1\n", 2, "workers[0]", "expected a mapping, got 'tcp://a:1'");
    expect_fail("model: m\n? [a, b]\n: c\nworkers: []\n", 2, NULL, "mapping keys must be plain");
}

static void test_reject_duplicate_keys(void **state) {
    (void)state;
    expect_fail("model: a\nworkers: [{endpoint: tcp://a:1}]\nmodel: b\n", 3, "model", "duplicate key (first at line 1)");
    expect_fail("workers:\n  - endpoint: tcp://a:1\n    threads: 2\n    threads: 3\n", 4, "workers[0].threads",
                "duplicate key (first at line 3)");
    expect_fail("coordinator: {http: \"a:1\", http: \"b:2\"}\nworkers: [{endpoint: tcp://a:1}]\n", 1, "coordinator.http", "duplicate key");
}

static void test_reject_duplicate_workers(void **state) {
    (void)state;
    expect_fail("workers:\n  - {name: a, endpoint: tcp://h1:1}\n  - {name: b, endpoint: tcp://h2:1}\n"
                "  - {name: a, endpoint: tcp://h3:1}\n",
                4, "workers[2].name", "'a' is already used by workers[0] (line 2)");
    expect_fail("workers:\n  - name: a\n    endpoint: tcp://h1:1\n  - name: b\n    endpoint: tcp://h1:1\n", 5,
                "workers[1].endpoint", "'tcp://h1:1' is already used by workers[0] 'a' (line 3)");
    /* a default name can collide with a given one */
    expect_fail("workers:\n  - {name: w1, endpoint: tcp://h1:1}\n  - {endpoint: tcp://h2:1}\n", 3, "workers[1].name",
                "'w1' is already used");
}

static void test_reject_endpoints(void **state) {
    (void)state;
    expect_fail("workers: [{endpoint: \"http://a:1\"}]\n", 1, "workers[0].endpoint", "expected tcp://host:port or ipc://path");
    expect_fail("workers: [{endpoint: \"tcp://a\"}]\n", 1, "workers[0].endpoint", "expected host:port");
    expect_fail("workers: [{endpoint: \"tcp://:7101\"}]\n", 1, "workers[0].endpoint", "expected host:port");
    expect_fail("workers: [{endpoint: \"tcp://a:70000\"}]\n", 1, "workers[0].endpoint", "port must be 1..65535");
    expect_fail("workers: [{endpoint: \"tcp://a:0\"}]\n", 1, "workers[0].endpoint", "port must be 1..65535");
    expect_fail("workers: [{endpoint: \"tcp://a:71x\"}]\n", 1, "workers[0].endpoint", "bad port");
    expect_fail("workers: [{endpoint: \"tcp://a b:71\"}]\n", 1, "workers[0].endpoint", "bad host");
    expect_fail("workers: [{endpoint: \"tcp://*:7101\"}]\n", 1, "workers[0].endpoint", "cannot connect to '*'");
    expect_fail("workers: [{endpoint: \"ipc://\"}]\n", 1, "workers[0].endpoint", "needs a path");
    expect_fail("workers:\n  - name: a\n\n    endpoint: tcp://a:1\n  - name: b\n", 5, "workers[1].endpoint", "missing");
    expect_fail("coordinator: {listen: \"udp://0.0.0.0:1\"}\nworkers: [{endpoint: tcp://a:1}]\n", 1, "coordinator.listen", "expected tcp://");
    expect_fail("coordinator:\n  http: \"localhost\"\nworkers: [{endpoint: tcp://a:1}]\n", 2, "coordinator.http", "expected host:port");
    /* the coordinator may listen on a wildcard */
    cluster_t c;
    expect_ok("coordinator: {listen: \"tcp://*:7100\", http: \"0.0.0.0:80\"}\nworkers: [{endpoint: tcp://a:1}]\n", &c);
    assert_string_equal(c.listen, "tcp://*:7100");
    cluster_free(&c);
}

static void test_reject_layers(void **state) {
    (void)state;
    expect_fail("workers:\n  - {endpoint: tcp://a:1, layers: [1, 2, 3]}\n", 2, "workers[0].layers", "expected [first, last], got a list of 3");
    expect_fail("workers:\n  - {endpoint: tcp://a:1, layers: 5}\n", 2, "workers[0].layers", "expected [first, last], got '5'");
    expect_fail("workers:\n  - {endpoint: tcp://a:1, layers: [a, 2]}\n", 2, "workers[0].layers", "expected an integer, got 'a'");
    expect_fail("workers:\n  - {endpoint: tcp://a:1, layers: [5, 2]}\n", 2, "workers[0].layers", "first <= last, got [5, 2]");
    expect_fail("workers:\n  - {endpoint: tcp://a:1, layers: [-1, 2]}\n", 2, "workers[0].layers", "between 0 and 65535");
    expect_fail("workers:\n  - {endpoint: tcp://a:1, layers: [0, 99999999999999999999]}\n", 2, "workers[0].layers", "between 0 and");
    expect_fail("workers:\n  - {name: a, endpoint: tcp://a:1, layers: [0, 10]}\n  - {name: b, endpoint: tcp://b:1}\n"
                "  - {name: c, endpoint: tcp://c:1,\n     layers: [10, 12]}\n",
                5, "workers[2].layers", "[10, 12] overlaps workers[0] 'a' [0, 10] (line 2)");
    expect_fail("workers:\n  - {endpoint: tcp://a:1}\n  - endpoint: tcp://b:1\n    standby: true\n    layers: [1, 2]\n", 5,
                "workers[1].layers", "a standby worker cannot pin layers");
}

static void test_reject_ranges(void **state) {
    (void)state;
    expect_fail("workers: [{endpoint: tcp://a:1, memory: 0}]\n", 1, "workers[0].memory", "must be between 1MiB and 1PiB, got '0'");
    expect_fail("workers: [{endpoint: tcp://a:1, memory: 2048TiB}]\n", 1, "workers[0].memory", "must be between");
    expect_fail("workers: [{endpoint: tcp://a:1, memory: -3G}]\n", 1, "workers[0].memory", "expected a size like 12GiB");
    expect_fail("workers: [{endpoint: tcp://a:1, memory: [1]}]\n", 1, "workers[0].memory", "got a list");
    expect_fail("workers: [{endpoint: tcp://a:1, threads: 0}]\n", 1, "workers[0].threads", "must be between 1 and 1024, got '0'");
    expect_fail("workers: [{endpoint: tcp://a:1, threads: 5000}]\n", 1, "workers[0].threads", "must be between 1 and 1024");
    expect_fail("heartbeat:\n  interval_ms: 500\n  timeout_ms: 400\nworkers: [{endpoint: tcp://a:1}]\n", 3, "heartbeat.timeout_ms",
                "must be greater than interval_ms");
    expect_fail("heartbeat: {interval_ms: 5}\nworkers: [{endpoint: tcp://a:1}]\n", 1, "heartbeat.interval_ms", "between 10 and 60000");
    expect_fail("security:\n  curve: true\nworkers: [{endpoint: tcp://a:1}]\n", 2, "security.keys", "needs a keys directory");
}

static void test_reject_workers_list_shape(void **state) {
    (void)state;
    expect_fail("model: m\nworkers: []\n", 2, "workers", "the list is empty");
    expect_fail("model: m\n", 1, "workers", "missing");
    expect_fail("workers:\n  - {endpoint: tcp://a:1, standby: true}\n", 2, "workers", "every worker is a standby");
    char *big = malloc(300 * 40 + 32);
    strcpy(big, "workers:\n");
    for (int i = 0; i < CLUSTER_MAX_WORKERS + 1; i++) sprintf(big + strlen(big), "  - {endpoint: \"tcp://h%d:1\"}\n", i);
    expect_fail_at(big, 2, "workers", "more than 256 workers", "big");
    free(big);
}

static void test_reject_document_shape(void **state) {
    (void)state;
    expect_fail("- a\n- b\n", 1, NULL, "expected a mapping at the top level");
    expect_fail("hello\n", 1, NULL, "expected a mapping at the top level");
    expect_fail("", 1, NULL, "the file is empty");
    expect_fail("# nothing\n\n", 3, NULL, "the file is empty");
    expect_fail("workers: [{endpoint: tcp://a:1}]\n---\nworkers: [{endpoint: tcp://b:1}]\n", 2, NULL,
                "multiple YAML documents");
    expect_fail("model: m\nworkers: [\n  {endpoint: tcp://a:1}\n", 4, NULL, "YAML syntax error");
    expect_fail("model: m\n  bad: indent\n", 2, NULL, "YAML syntax error");
    expect_fail("model: !!str m\nworkers: [{endpoint: tcp://a:1}]\n", 1, NULL, "tags (tag:yaml.org,2002:str) are not supported");
}

static void test_reject_anchors_aliases(void **state) {
    (void)state;
    expect_fail("w: &w {endpoint: tcp://a:1}\nworkers: [*w]\n", 1, NULL, "anchors (&w)");
    /* billion laughs: refused at the first anchor, nothing is expanded */
    expect_fail("model: m\n"
                "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
                "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                "workers: [*c]\n",
                2, NULL, "anchors (&a) and aliases are not supported");
    expect_fail("workers: *x\n", 1, NULL, "aliases (*x)");
}

static void test_reject_deep_nesting(void **state) {
    (void)state;
    char y[512] = "model: ";
    for (int i = 0; i < 60; i++) strcat(y, "[");
    for (int i = 0; i < 60; i++) strcat(y, "]");
    strcat(y, "\nworkers: [{endpoint: tcp://a:1}]\n");
    expect_fail_at(y, 1, NULL, "nesting deeper than", "deep");
}

static void test_workers_list(void **state) {
    (void)state;
    cluster_t c;
    char err[256] = "";
    assert_int_equal(cluster_from_workers_list(&c, "tcp://a:7101, tcp://b:7101 ,ipc:///tmp/x", err, sizeof err), 0);
    assert_int_equal(c.n_workers, 3);
    assert_string_equal(c.name, "--workers");
    assert_string_equal(c.workers[0].name, "w0");
    assert_string_equal(c.workers[0].endpoint, "tcp://a:7101");
    assert_string_equal(c.workers[1].name, "w1");
    assert_string_equal(c.workers[1].endpoint, "tcp://b:7101");
    assert_string_equal(c.workers[2].endpoint, "ipc:///tmp/x");
    assert_int_equal(c.workers[1].first, -1);
    assert_int_equal(c.workers[1].line, 0);
    assert_int_equal(c.heartbeat_timeout_ms, 3000);
    cluster_free(&c);

    struct { const char *csv, *msg; } bad[] = {
        {"", "--workers: item 1 is empty"},
        {"tcp://a:1,", "--workers: item 2 is empty"},
        {"tcp://a:1,http://b:2", "--workers: item 2 'http://b:2': expected tcp://host:port"},
        {"tcp://a:1, tcp://a:1", "--workers: item 2 'tcp://a:1' repeats item 1"},
        {"tcp://a", "--workers: item 1 'tcp://a': expected host:port"},
        {"ipc://a\nb", "--workers: item 1 'ipc://a?b': control characters"},   /* echoed on one line */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        int rc = cluster_from_workers_list(&c, bad[i].csv, err, sizeof err);
        if (rc != TERN_EINVAL || strncmp(err, bad[i].msg, strlen(bad[i].msg))) {
            print_error("'%s': rc=%d err='%s' want '%s'\n", bad[i].csv, rc, err, bad[i].msg);
            fail();
        }
        assert_null(c.workers);
    }
}

static void test_check_endpoint(void **state) {
    (void)state;
    char err[128];
    assert_int_equal(cluster_check_endpoint("tcp://10.0.0.1:7101", err, sizeof err), 0);
    assert_int_equal(cluster_check_endpoint("tcp://[fe80::1]:1", err, sizeof err), 0);
    assert_int_equal(cluster_check_endpoint("ipc://x", err, sizeof err), 0);
    assert_int_equal(cluster_check_endpoint("tcp://[fe80::1:1", err, sizeof err), TERN_EINVAL);
    assert_int_equal(cluster_check_endpoint("tcp://h:123456", err, sizeof err), TERN_EINVAL);
    assert_int_equal(cluster_check_endpoint("inproc://x", err, sizeof err), TERN_EINVAL);
}

/* the repository's example files must parse */
static void test_load_files(void **state) {
    (void)state;
    char path[1024], err[512] = "";
    const char *src = getenv("TERN_SRC");
    const char *files[] = {"deploy/cluster.example.yaml", "deploy/cluster.local.yaml"};
    for (int i = 0; i < 2; i++) {
        if (src) snprintf(path, sizeof path, "%s/%s", src, files[i]);
        else {   /* this file is <src>/tests/unit/test_cluster_file.c */
            snprintf(path, sizeof path, "%s", __FILE__);
            char *cut = strstr(path, "tests/unit/");
            if (cut) *cut = 0;
            else strcpy(path, "./");
            strncat(path, files[i], sizeof path - strlen(path) - 1);
        }
        cluster_t c;
        int rc = cluster_file_load(&c, path, err, sizeof err);
        if (rc) {
            print_error("%s: %s\n", path, err);
            fail();
        }
        assert_true(c.n_workers >= 2);
        cluster_free(&c);
    }
    cluster_t c;
    assert_int_equal(cluster_file_load(&c, "/nonexistent/cluster.yaml", err, sizeof err), TERN_EIO);
    assert_non_null(strstr(err, "/nonexistent/cluster.yaml"));
    /* a file on disk keeps its path in messages */
    char tmp[] = "/tmp/tern_cluster_XXXXXX";
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    const char *y = "workers:\n  - {endpoint: tcp://a:1, bogus: 1}\n";
    assert_int_equal(write(fd, y, strlen(y)), (int)strlen(y));
    close(fd);
    assert_int_equal(cluster_file_load(&c, tmp, err, sizeof err), TERN_EFORMAT);
    char want[128];
    snprintf(want, sizeof want, "%s:2: workers[0].bogus: unknown key", tmp);
    assert_int_equal(strncmp(err, want, strlen(want)), 0);
    unlink(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_design_example),
        cmocka_unit_test(test_block_style_and_defaults),
        cmocka_unit_test(test_mpi_without_endpoints),
        cmocka_unit_test(test_error_message_exact),
        cmocka_unit_test(test_reject_unknown_keys),
        cmocka_unit_test(test_reject_wrong_types),
        cmocka_unit_test(test_reject_duplicate_keys),
        cmocka_unit_test(test_reject_duplicate_workers),
        cmocka_unit_test(test_reject_endpoints),
        cmocka_unit_test(test_reject_layers),
        cmocka_unit_test(test_reject_ranges),
        cmocka_unit_test(test_reject_workers_list_shape),
        cmocka_unit_test(test_reject_document_shape),
        cmocka_unit_test(test_reject_anchors_aliases),
        cmocka_unit_test(test_reject_deep_nesting),
        cmocka_unit_test(test_workers_list),
        cmocka_unit_test(test_check_endpoint),
        cmocka_unit_test(test_load_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
