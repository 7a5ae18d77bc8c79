/* delay_relay: `tern-delay-relay LISTEN TARGET DELAY_US` — a TCP relay that holds every byte
 * DELAY_US microseconds in each direction before passing it on: the latency half of the netns
 * home-lab simulation (this kernel has no netem; bandwidth is shaped with tbf on the veths).
 * One thread, epoll + a timerfd with 1 ns timer slack; each accepted connection gets its own
 * connection to TARGET; TCP_NODELAY both ways; at most RELAY_MAX_QUEUED bytes held per
 * direction (then it stops reading: back pressure). IPv4 only. Not here: loss, jitter, rates. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define RELAY_MAX_FD 65536
#define RELAY_READ 65536
#define RELAY_MAX_QUEUED (8u << 20)

typedef struct chunk {
    struct chunk *next;
    uint64_t due;           /* CLOCK_MONOTONIC ns when it may be written */
    size_t len, off;
    uint8_t data[];
} chunk_t;

typedef struct dir {        /* bytes read from `from`, written to `to` */
    int from, to;
    chunk_t *head, *tail;
    size_t queued;
    int eof, shut, blocked; /* read EOF / write side shut down / last write hit EAGAIN */
} dir_t;

typedef struct pair {
    struct pair *next;
    dir_t d[2];             /* d[0]: client -> target, d[1]: target -> client */
    int dead;
} pair_t;

static pair_t *g_pairs;
static pair_t *g_by_fd[RELAY_MAX_FD];
static int g_ep;
static uint64_t g_delay_ns;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* "A.B.C.D:PORT" into sa; 0 or -1 */
static int parse_addr(const char *s, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || port < 0 || port > 65535) return -1;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

/* epoll interest of fd, from the two directions that touch it */
static void watch(pair_t *p, int fd, int op) {
    struct epoll_event ev = {0};
    for (int i = 0; i < 2; i++) {
        dir_t *d = &p->d[i];
        if (d->from == fd && !d->eof && d->queued < RELAY_MAX_QUEUED) ev.events |= EPOLLIN;
        if (d->to == fd && d->blocked) ev.events |= EPOLLOUT;
    }
    ev.data.fd = fd;
    epoll_ctl(g_ep, op, fd, &ev);
}

static void pair_close(pair_t *p) {
    for (int i = 0; i < 2; i++) {
        chunk_t *c = p->d[i].head;
        while (c) {
            chunk_t *n = c->next;
            free(c);
            c = n;
        }
        p->d[i].head = p->d[i].tail = NULL;
    }
    for (int i = 0; i < 2; i++) {
        int fd = p->d[i].from;
        epoll_ctl(g_ep, EPOLL_CTL_DEL, fd, NULL);
        g_by_fd[fd] = NULL;
        close(fd);
    }
    p->dead = 1;
}

/* a connected, non-blocking, TCP_NODELAY socket to target, or -1 (the target lives in this
 * namespace, so a blocking connect answers at once) */
static int dial(const struct sockaddr_in *target) {
    int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (t < 0) return -1;
    if (t >= RELAY_MAX_FD || connect(t, (const struct sockaddr *)target, sizeof *target) < 0 ||
        fcntl(t, F_SETFL, fcntl(t, F_GETFL) | O_NONBLOCK) < 0) {
        close(t);
        return -1;
    }
    return t;
}

static void on_accept(int lfd, const struct sockaddr_in *target) {
    int one = 1;
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) return;
        int t = c < RELAY_MAX_FD ? dial(target) : -1;
        pair_t *p = t >= 0 ? calloc(1, sizeof *p) : NULL;
        if (!p) {
            if (t >= 0) close(t);
            close(c);   /* the client sees the link drop and retries (ZeroMQ reconnects) */
            continue;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        p->d[0] = (dir_t){.from = c, .to = t};
        p->d[1] = (dir_t){.from = t, .to = c};
        p->next = g_pairs;
        g_pairs = p;
        g_by_fd[c] = g_by_fd[t] = p;
        watch(p, c, EPOLL_CTL_ADD);
        watch(p, t, EPOLL_CTL_ADD);
    }
}

/* reads what is there into time-stamped chunks; <0 on a socket error */
static int dir_read(dir_t *d) {
    while (!d->eof && d->queued < RELAY_MAX_QUEUED) {
        chunk_t *c = malloc(sizeof *c + RELAY_READ);
        if (!c) return -1;
        ssize_t n = recv(d->from, c->data, RELAY_READ, 0);
        if (n <= 0) {
            free(c);
            if (n == 0) { d->eof = 1; return 0; }
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
        }
        c->len = (size_t)n, c->off = 0, c->next = NULL;
        c->due = now_ns() + g_delay_ns;
        if (d->tail) d->tail->next = c;
        else d->head = c;
        d->tail = c;
        d->queued += (size_t)n;
    }
    return 0;
}

/* writes the chunks that are due; <0 on a socket error */
static int dir_flush(dir_t *d, uint64_t now) {
    d->blocked = 0;
    while (d->head && d->head->due <= now) {
        chunk_t *c = d->head;
        ssize_t n = send(d->to, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) { d->blocked = 1; return 0; }
            return errno == EINTR ? 0 : -1;
        }
        c->off += (size_t)n;
        d->queued -= (size_t)n;
        if (c->off < c->len) continue;
        d->head = c->next;
        if (!d->head) d->tail = NULL;
        free(c);
    }
    if (d->eof && !d->head && !d->shut) {
        shutdown(d->to, SHUT_WR);
        d->shut = 1;
    }
    return 0;
}

/* flushes every pair, drops finished ones, and returns the earliest due time still waiting */
static uint64_t service(void) {
    uint64_t now = now_ns(), next = UINT64_MAX;
    for (pair_t **pp = &g_pairs; *pp;) {
        pair_t *p = *pp;
        int bad = 0;
        for (int i = 0; i < 2 && !bad; i++) bad = dir_flush(&p->d[i], now) < 0;
        if (bad || (p->d[0].shut && p->d[1].shut)) pair_close(p);
        if (p->dead) {
            *pp = p->next;
            free(p);
            continue;
        }
        for (int i = 0; i < 2; i++) {
            const dir_t *d = &p->d[i];
            if (d->head && !d->blocked && d->head->due < next) next = d->head->due;
        }
        watch(p, p->d[0].from, EPOLL_CTL_MOD);
        watch(p, p->d[1].from, EPOLL_CTL_MOD);
        pp = &p->next;
    }
    return next;
}

static int relay_loop(int lfd, const struct sockaddr_in *target) {
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if ((g_ep = epoll_create1(EPOLL_CLOEXEC)) < 0 || tfd < 0) return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = tfd;
    epoll_ctl(g_ep, EPOLL_CTL_ADD, tfd, &ev);
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(g_ep, evs, 64, -1);
        if (n < 0 && errno != EINTR) return -1;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) { on_accept(lfd, target); continue; }
            if (fd == tfd) {
                uint64_t x;
                if (read(tfd, &x, sizeof x) < 0) {}
                continue;
            }
            pair_t *p = fd < RELAY_MAX_FD ? g_by_fd[fd] : NULL;
            if (!p || p->dead || !(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            dir_t *d = p->d[0].from == fd ? &p->d[0] : &p->d[1];
            if (dir_read(d) < 0) pair_close(p);
        }
        uint64_t next = service();
        struct itimerspec its = {0};
        if (next != UINT64_MAX) {   /* absolute: one wake-up at the earliest due chunk */
            its.it_value.tv_sec = (time_t)(next / 1000000000ull);
            its.it_value.tv_nsec = (long)(next % 1000000000ull);
        }
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
    }
}

int main(int argc, char **argv) {
    struct sockaddr_in la, ta;
    char *end = NULL;
    double us = argc == 4 ? strtod(argv[3], &end) : -1;
    if (argc != 4 || parse_addr(argv[1], &la) || parse_addr(argv[2], &ta) || !end || *end || us < 0 || us > 1e7) {
        fprintf(stderr, "usage: tern-delay-relay LISTEN_IP:PORT TARGET_IP:PORT DELAY_US\n"
                        "  holds each byte DELAY_US microseconds (0 .. 10 s) in each direction\n");
        return 2;
    }
    g_delay_ns = (uint64_t)(us * 1000.0);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(lfd, (struct sockaddr *)&la, sizeof la) < 0 || listen(lfd, 64) < 0) {
        fprintf(stderr, "tern-delay-relay: cannot listen on %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    printf("ready %s -> %s, %.0f us each way\n", argv[1], argv[2], us);
    fflush(stdout);
    if (relay_loop(lfd, &ta) < 0) {
        fprintf(stderr, "tern-delay-relay: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}
