/* The waits of a program on Unix-domain stream sockets, for the preload's
 * fast-mode tests: epoll level, edge-triggered and one-shot, EPOLLOUT,
 * maxevents, epoll_pwait/ppoll/pselect with a signal mask, epoll_pwait2
 * with a sub-millisecond timeout, a poll set mixing a connection, pipes
 * and -1, select above fd 64, nested and forked epoll sets, bytes that
 * arrive after a wait woke and reach poll, select, a set nested then,
 * another thread's wait and a forked child's, end-of-file and hang-up. It knows nothing of the preload; the tests run it with and
 * without and compare what it prints.
 *
 *   epollprog server PATH     serves one client, runs every scenario
 *   epollprog client PATH     the server's puppet
 *
 * The client opens a control connection and a data connection. The
 * server sends commands on the control one ("send N", "recv N", "drain",
 * "more K", "xsend I N", "shut", "close", "exit"); the client carries
 * each out on the data connection (or its I-th extra one) and answers
 * "ok" when done, so every wait the server
 * makes has a known answer. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROG "epollprog"
#include "common.h"

static void check(int ok, const char *what) {
    if (!ok) { fprintf(stderr, "epollprog: check failed: %s\n", what); exit(1); }
}


static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

static void put_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd q = {fd, POLLOUT, 0};
                poll(&q, 1, 5000);
                continue;
            }
            die("write");
        }
        c += w; n -= (size_t)w;
    }
}

/* A line from a blocking fd, byte by byte (the control connection). */
static int get_line(int fd, char *buf, size_t cap) {
    size_t n = 0;
    while (n + 1 < cap) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        if (c == '\n') break;
        buf[n++] = c;
    }
    buf[n] = 0;
    return (int)n;
}

/* ---------------------------------------------------------------- client */

static int client(const char *path) {
    int ctl = dial(path);
    int data = dial(path);
    int extra[64];
    int nextra = 0;
    static char buf[1 << 16];
    char line[128];
    while (get_line(ctl, line, sizeof line) >= 0) {
        long n = 0;
        int i = 0;
        char ack[64] = "ok";
        if (sscanf(line, "send %ld", &n) == 1) {
            memset(buf, 'x', sizeof buf);
            while (n > 0) {
                size_t k = n > (long)sizeof buf ? sizeof buf : (size_t)n;
                put_all(data, buf, k);
                n -= (long)k;
            }
        } else if (sscanf(line, "recv %ld", &n) == 1) {
            while (n > 0) {
                ssize_t r = read(data, buf, n > (long)sizeof buf ? sizeof buf : (size_t)n);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) die("recv");
                n -= r;
            }
        } else if (!strcmp(line, "drain")) {
            long got = 0;
            for (;;) {
                ssize_t r = read(data, buf, sizeof buf);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) die("drain");
                got += r;
                if (buf[r - 1] == '!') break;
            }
            snprintf(ack, sizeof ack, "ok %ld", got);
        } else if (sscanf(line, "xsend %d %ld", &i, &n) == 2) {
            if (i < 0 || i >= nextra) die("xsend: no such connection");
            memset(buf, 'z', sizeof buf);
            put_all(extra[i], buf, (size_t)n);
        } else if (sscanf(line, "more %ld", &n) == 1) {
            for (long i = 0; i < n && nextra < 64; i++) {
                extra[nextra] = dial(path);
                put_all(extra[nextra], "m", 1);
                nextra++;
            }
        } else if (!strcmp(line, "shut")) {
            if (shutdown(data, SHUT_WR) < 0) die("shutdown");
        } else if (!strcmp(line, "close")) {
            close(data);
        } else if (!strcmp(line, "exit")) {
            put_all(ctl, "ok\n", 3);
            return 0;
        }
        strcat(ack, "\n");
        put_all(ctl, ack, strlen(ack));
    }
    return 0;
}

/* ---------------------------------------------------------------- server */

static int ctl_fd;

/* Sends a command and waits for the client's answer (returned). */
static const char *command(const char *fmt, long arg) {
    static char line[128];
    char cmd[64];
    snprintf(cmd, sizeof cmd, fmt, arg);
    strcat(cmd, "\n");
    put_all(ctl_fd, cmd, strlen(cmd));
    if (get_line(ctl_fd, line, sizeof line) < 0) die("client answer");
    check(!strncmp(line, "ok", 2), "client said ok");
    return line;
}

static const char *bits(uint32_t e) {
    static char s[128];
    s[0] = 0;
    if (e & EPOLLIN) strcat(s, "IN ");
    if (e & EPOLLOUT) strcat(s, "OUT ");
    if (e & EPOLLRDHUP) strcat(s, "RDHUP ");
    if (e & EPOLLHUP) strcat(s, "HUP ");
    if (e & EPOLLERR) strcat(s, "ERR ");
    if (!s[0]) strcpy(s, "- ");
    s[strlen(s) - 1] = 0;
    return s;
}

/* One wait; prints its count and the first event's bits and data. */
static int wait1(const char *what, int ep, int timeout) {
    struct epoll_event ev[8];
    int n = epoll_wait(ep, ev, 8, timeout);
    if (n < 0) die("epoll_wait");
    if (n == 0)
        printf("%s: 0\n", what);
    else
        printf("%s: %d %s data=%llu\n", what, n, bits(ev[0].events),
               (unsigned long long)ev[0].data.u64);
    return n;
}

/* Reads what is there, non-blocking, until EAGAIN or end-of-file. */
static long read_avail(int fd, int *eof) {
    static char buf[1 << 16];
    long got = 0;
    *eof = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) { got += r; continue; }
        if (r == 0) { *eof = 1; return got; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return got;
        die("read");
    }
}

static long read_some(int fd, long n) {
    static char buf[1 << 16];
    ssize_t r = read(fd, buf, (size_t)n);
    if (r < 0) die("read some");
    return r;
}

static void on_usr1(int sig) { (void)sig; }

/* Waits (at most five seconds) until the thread or process whose stat
 * file is `path` sleeps. */
static void until_asleep(const char *path) {
    for (int i = 0; i < 5000; i++) {
        char st[512];
        FILE *f = fopen(path, "r");
        if (!f) die("stat");
        size_t k = fread(st, 1, sizeof st - 1, f);
        fclose(f);
        st[k] = 0;
        char *p = strrchr(st, ')');
        if (p && p[1] == ' ' && p[2] == 'S') return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    die("never asleep");
}

/* Accepts one more connection of the client's (it sends "m" on it). */
static int accept_one(int l) {
    int fd = accept(l, NULL, NULL);
    if (fd < 0) die("accept");
    /* A blocking read: a poll would be a wait only the kernel answers,
     * after which the preload keeps this connection's arms. */
    char m;
    if (read(fd, &m, 1) != 1 || m != 'm') die("its m");
    set_nonblock(fd);
    return fd;
}

static long read_some(int fd, long n);
static const char *command(const char *fmt, long arg);

/* A set of its own holding `fd` (the client's extra connection `i`), with
 * data `d`, after one byte came through a wait on it and was read, as a
 * server that reads once per event (redis) reads: no read ran into
 * EAGAIN, which would arm the connection for the socket. */
static int set_of(int fd, int i, uint64_t d) {
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = d};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) die("set_of");
    char cmd[32];
    snprintf(cmd, sizeof cmd, "xsend %d %%ld", i);
    command(cmd, 1);
    struct epoll_event ev[2];
    if (epoll_wait(ep, ev, 2, 5000) != 1 || read_some(fd, 1) != 1) die("set_of: its byte");
    return ep;
}

static int sleeper_ep;
static pid_t sleeper_tid;
static int sleeper_got;

static void *sleeper(void *arg) {
    (void)arg;
    sleeper_tid = (pid_t)syscall(SYS_gettid);
    struct epoll_event ev[2];
    __atomic_store_n(&sleeper_got, -2, __ATOMIC_SEQ_CST);
    int n = epoll_wait(sleeper_ep, ev, 2, 5000);
    __atomic_store_n(&sleeper_got, n, __ATOMIC_SEQ_CST);
    return NULL;
}

static int server(const char *path) {
    int l = listen_on(path, 64);
    ctl_fd = accept(l, NULL, NULL);
    int c = accept(l, NULL, NULL);
    if (ctl_fd < 0 || c < 0) die("accept");
    set_nonblock(c);
    int eof;

    /* Level-triggered: reported while bytes are left. */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 7};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &e) < 0) die("epoll_ctl add");
    check(epoll_ctl(ep, EPOLL_CTL_ADD, c, &e) < 0 && errno == EEXIST, "second ADD is EEXIST");
    wait1("level idle", ep, 0);
    command("send %ld", 1000);
    wait1("level 1000 bytes", ep, 5000);
    printf("read %ld\n", read_some(c, 100));
    wait1("level 900 left", ep, 0);
    printf("read %ld\n", read_avail(c, &eof));
    wait1("level drained", ep, 0);

    /* Removed and added again (redis's event loop does it around every
     * request): nothing is reported while it is out, all of it after. */
    if (epoll_ctl(ep, EPOLL_CTL_DEL, c, NULL) < 0) die("epoll_ctl del");
    check(epoll_ctl(ep, EPOLL_CTL_DEL, c, NULL) < 0 && errno == ENOENT, "DEL twice is ENOENT");
    check(epoll_ctl(ep, EPOLL_CTL_MOD, c, &e) < 0 && errno == ENOENT, "MOD after DEL is ENOENT");
    command("send %ld", 30);
    wait1("removed, 30 bytes sent", ep, 50);
    e.data.u64 = 6;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &e) < 0) die("epoll_ctl add again");
    wait1("added again", ep, 5000);
    printf("read %ld\n", read_avail(c, &eof));
    if (epoll_ctl(ep, EPOLL_CTL_DEL, c, NULL) < 0) die("epoll_ctl del 2");
    e.data.u64 = 7;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &e) < 0) die("epoll_ctl add 2");
    wait1("added again, drained", ep, 0);

    /* Edge-triggered: once per arrival. */
    e.events = EPOLLIN | EPOLLET;
    e.data.u64 = 8;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c, &e) < 0) die("epoll_ctl mod et");
    command("send %ld", 500);
    wait1("et 500 bytes", ep, 5000);
    printf("read %ld\n", read_some(c, 100));
    wait1("et 400 left, nothing new", ep, 50);
    command("send %ld", 10);
    /* The bytes are there before the client says ok: no long wait. */
    wait1("et 10 more", ep, 500);
    printf("read %ld\n", read_avail(c, &eof));
    wait1("et drained", ep, 0);

    /* One-shot: disabled after one report until MOD. */
    e.events = EPOLLIN | EPOLLONESHOT;
    e.data.u64 = 9;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c, &e) < 0) die("epoll_ctl mod oneshot");
    command("send %ld", 20);
    wait1("oneshot 20 bytes", ep, 5000);
    wait1("oneshot fired, bytes left", ep, 50);
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c, &e) < 0) die("epoll_ctl rearm");
    wait1("oneshot re-armed", ep, 5000);
    printf("read %ld\n", read_avail(c, &eof));

    /* EPOLLOUT from ring space: writable, full, writable again. */
    e.events = EPOLLOUT;
    e.data.u64 = 10;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c, &e) < 0) die("epoll_ctl mod out");
    wait1("out idle", ep, 0);
    static char fill[1 << 16];
    memset(fill, 'y', sizeof fill);
    long wrote = 0;
    for (;;) {
        ssize_t w = write(c, fill, sizeof fill);
        if (w > 0) { wrote += w; continue; }
        if (w < 0 && errno == EAGAIN) break;
        die("fill");
    }
    wait1("out full", ep, 50);
    /* The client drains until '!', which goes once there is room. */
    char cmd[] = "drain\n";
    put_all(ctl_fd, cmd, strlen(cmd));
    wait1("out room again", ep, 5000);
    put_all(c, "!", 1);
    char line[128];
    if (get_line(ctl_fd, line, sizeof line) < 0) die("drain answer");
    long drained = 0;
    check(sscanf(line, "ok %ld", &drained) == 1, "drain answer");
    printf("drained all: %s\n", drained == wrote + 1 ? "yes" : "NO");

    /* maxevents: eight connections ready, at most three per wait. */
    int ep2 = epoll_create(8);
    if (ep2 < 0) die("epoll_create");
    command("more %ld", 8);
    int more[8];
    for (int i = 0; i < 8; i++) {
        more[i] = accept(l, NULL, NULL);
        if (more[i] < 0) die("accept more");
        set_nonblock(more[i]);
        struct epoll_event m = {.events = EPOLLIN, .data.u64 = 100 + (uint64_t)i};
        if (epoll_ctl(ep2, EPOLL_CTL_ADD, more[i], &m) < 0) die("epoll_ctl more");
    }
    int seen = 0, waits = 0, most = 0;
    while (seen < 8 && waits < 100) {
        struct epoll_event ev[3];
        int n = epoll_wait(ep2, ev, 3, 5000);
        if (n < 0) die("epoll_wait more");
        waits++;
        if (n > most) most = n;
        for (int i = 0; i < n; i++) {
            int fd = more[ev[i].data.u64 - 100];
            seen += read_avail(fd, &eof) == 1;
        }
    }
    printf("maxevents: %d of 8 seen, at most %d per wait\n", seen, most);
    wait1("maxevents drained", ep2, 0);
    for (int i = 0; i < 8; i++) {
        if (epoll_ctl(ep2, EPOLL_CTL_DEL, more[i], NULL) < 0) die("epoll_ctl del");
    }
    check(epoll_ctl(ep2, EPOLL_CTL_DEL, more[0], NULL) < 0 && errno == ENOENT,
          "second DEL is ENOENT");
    check(epoll_ctl(ep2, EPOLL_CTL_MOD, more[0], &e) < 0 && errno == ENOENT,
          "MOD of a removed fd is ENOENT");

    /* Signal masks: SIGUSR1 blocked and pending; the waits that unblock it
     * are interrupted, the others are not. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block, none;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigemptyset(&none);
    int m0 = c;
    struct epoll_event m = {.events = EPOLLIN, .data.u64 = 200};
    if (epoll_ctl(ep2, EPOLL_CTL_ADD, m0, &m) < 0) die("epoll_ctl m0");
    sigprocmask(SIG_BLOCK, &block, NULL);
    raise(SIGUSR1);
    struct epoll_event ev[4];
    int r = epoll_wait(ep2, ev, 4, 20);
    printf("epoll_wait with it blocked: %d\n", r);
    r = epoll_pwait(ep2, ev, 4, 5000, &none);
    printf("epoll_pwait unblocking it: %d %s\n", r, r < 0 && errno == EINTR ? "EINTR" : "-");
    raise(SIGUSR1);
    struct pollfd pf = {m0, POLLIN, 0};
    struct timespec five = {5, 0};
    r = ppoll(&pf, 1, &five, &none);
    printf("ppoll unblocking it: %d %s\n", r, r < 0 && errno == EINTR ? "EINTR" : "-");
    raise(SIGUSR1);
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(m0, &rs);
    r = pselect(m0 + 1, &rs, NULL, NULL, &five, &none);
    printf("pselect unblocking it: %d %s\n", r, r < 0 && errno == EINTR ? "EINTR" : "-");
    /* Pending and unblocked by the mask, but an event is ready: the event. */
    raise(SIGUSR1);
    command("send %ld", 1);
    r = epoll_pwait(ep2, ev, 4, 5000, NULL);
    check(r == 1, "a wait without a mask sees the byte");
    r = epoll_pwait(ep2, ev, 4, 5000, &none);
    printf("epoll_pwait with a byte ready: %d\n", r);
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    read_avail(c, &eof);

    /* epoll_pwait2: a sub-millisecond timeout ends the wait, a bad one is
     * EINVAL. */
    struct timespec t = {0, 200000};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    r = epoll_pwait2(ep2, ev, 4, &t, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("epoll_pwait2 200us: %d within a second: %s\n", r, ms < 1000 ? "yes" : "NO");
    struct timespec bad = {0, 2000000000L};
    r = epoll_pwait2(ep2, ev, 4, &bad, NULL);
    printf("epoll_pwait2 bad timeout: %d %s\n", r, r < 0 && errno == EINVAL ? "EINVAL" : "-");

    /* poll: a connection, a pipe's two ends and a -1. */
    int p[2];
    if (pipe(p) < 0) die("pipe");
    command("send %ld", 5);
    struct pollfd set[4] = {{m0, POLLIN, 0}, {p[0], POLLIN, 0}, {-1, POLLIN, 0}, {p[1], POLLOUT, 0}};
    r = poll(set, 4, 5000);
    printf("poll mix: %d [%d %d %d %d]\n", r, set[0].revents, set[1].revents, set[2].revents,
           set[3].revents);
    read_avail(m0, &eof);
    set[0].revents = 99;
    set[3].events = 0;
    r = poll(set, 4, 0);
    printf("poll mix drained: %d [%d %d %d %d]\n", r, set[0].revents, set[1].revents,
           set[2].revents, set[3].revents);

    /* select above fd 64. */
    if (dup2(m0, 100) != 100) die("dup2");
    command("send %ld", 3);
    FD_ZERO(&rs);
    FD_SET(100, &rs);
    FD_SET(p[0], &rs);
    fd_set ws;
    FD_ZERO(&ws);
    FD_SET(p[1], &ws);
    struct timeval tv = {5, 0};
    r = select(101, &rs, &ws, NULL, &tv);
    printf("select 100: %d r100=%d rpipe=%d wpipe=%d\n", r, FD_ISSET(100, &rs) != 0,
           FD_ISSET(p[0], &rs) != 0, FD_ISSET(p[1], &ws) != 0);
    read_avail(100, &eof);
    close(100);

    /* Nested: a set inside another set, and in poll. */
    int inner = epoll_create1(0), outer = epoll_create1(0);
    if (inner < 0 || outer < 0) die("epoll_create1 nested");
    struct epoll_event in = {.events = EPOLLIN, .data.u64 = 300};
    if (epoll_ctl(inner, EPOLL_CTL_ADD, m0, &in) < 0) die("epoll_ctl inner");
    wait1("inner idle", inner, 0);
    struct epoll_event on = {.events = EPOLLIN, .data.u64 = 400};
    if (epoll_ctl(outer, EPOLL_CTL_ADD, inner, &on) < 0) die("epoll_ctl outer");
    wait1("outer idle", outer, 0);
    command("send %ld", 4);
    wait1("outer", outer, 5000);
    struct pollfd pi = {inner, POLLIN, 0};
    r = poll(&pi, 1, 5000);
    printf("poll of inner: %d %d\n", r, pi.revents);
    wait1("inner", inner, 0);
    read_avail(m0, &eof);
    wait1("inner drained", inner, 0);
    wait1("outer drained", outer, 0);

    /* An epoll set shared with a forked child: the child waits and reads. */
    int ep3 = epoll_create1(0);
    struct epoll_event fe = {.events = EPOLLIN, .data.u64 = 500};
    if (epoll_ctl(ep3, EPOLL_CTL_ADD, m0, &fe) < 0) die("epoll_ctl fork");
    command("send %ld", 6);
    fflush(stdout);
    pid_t kid = fork();
    if (kid < 0) die("fork");
    if (kid == 0) {
        wait1("child", ep3, 5000);
        printf("child read %ld\n", read_avail(m0, &eof));
        fflush(stdout);
        _exit(0);
    }
    int st;
    if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) die("child");
    wait1("parent after the child read", ep3, 0);

    /* A wait that sleeps and wakes (here at its timeout); bytes that come
     * after it must reach every other way of waiting. Extra connections
     * 8 to 12, each in a set of its own. */
    command("more %ld", 5);
    int x[5];
    for (int i = 0; i < 5; i++) x[i] = accept_one(l);
    long got;

    int e0 = set_of(x[0], 8, 600);
    wait1("x0 idle", e0, 10);
    command("xsend 8 %ld", 7);
    struct pollfd px = {x[0], POLLIN, 0};
    r = poll(&px, 1, 5000);
    printf("poll after a wake: %d %d\n", r, px.revents);
    r = poll(&px, 1, 0);
    printf("poll again, unread: %d %d\n", r, px.revents);
    printf("read %ld\n", read_avail(x[0], &eof));
    command("xsend 8 %ld", 2);
    wait1("x0 set after the poll", e0, 5000);
    printf("read %ld\n", read_avail(x[0], &eof));

    int e1 = set_of(x[1], 9, 601);
    wait1("x1 idle", e1, 10);
    command("xsend 9 %ld", 5);
    FD_ZERO(&rs);
    FD_SET(x[1], &rs);
    struct timeval five_s = {5, 0};
    r = select(x[1] + 1, &rs, NULL, NULL, &five_s);
    printf("select after a wake: %d %d\n", r, FD_ISSET(x[1], &rs) != 0);
    printf("read %ld\n", read_avail(x[1], &eof));

    int e2 = set_of(x[2], 10, 602);
    wait1("x2 idle", e2, 10);
    command("xsend 10 %ld", 4);
    int outer2 = epoll_create1(0);
    struct epoll_event o2 = {.events = EPOLLIN, .data.u64 = 700};
    if (outer2 < 0 || epoll_ctl(outer2, EPOLL_CTL_ADD, e2, &o2) < 0) die("outer2");
    wait1("nested after a wake", outer2, 5000);
    wait1("x2 set, nested", e2, 0);
    printf("read %ld\n", read_avail(x[2], &eof));
    command("xsend 10 %ld", 3);
    wait1("nested, more", outer2, 5000);
    got = read_avail(x[2], &eof);
    printf("read %ld\n", got);

    /* Another thread sleeps on the same set while this one's wait ends. */
    sleeper_ep = set_of(x[3], 11, 603);
    sleeper_got = -1;
    pthread_t th;
    if (pthread_create(&th, NULL, sleeper, NULL) != 0) die("pthread_create");
    while (__atomic_load_n(&sleeper_got, __ATOMIC_SEQ_CST) != -2) sched_yield();
    char statpath[64];
    snprintf(statpath, sizeof statpath, "/proc/self/task/%d/stat", (int)sleeper_tid);
    until_asleep(statpath);
    wait1("x3, a second waiter", sleeper_ep, 10);
    command("xsend 11 %ld", 6);
    pthread_join(th, NULL);
    printf("the sleeping thread: %d\n", sleeper_got);
    printf("read %ld\n", read_avail(x[3], &eof));

    /* A forked child sleeps on the connection while the parent's wait on
     * it ends. */
    int e4 = set_of(x[4], 12, 604);
    fflush(stdout);
    kid = fork();
    if (kid < 0) die("fork");
    if (kid == 0) {
        struct epoll_event cev[2];
        int n = epoll_wait(e4, cev, 2, 5000);
        printf("the sleeping child: %d\n", n);
        fflush(stdout);
        _exit(0);
    }
    snprintf(statpath, sizeof statpath, "/proc/%d/stat", (int)kid);
    until_asleep(statpath);
    wait1("x4, the parent", e4, 10);
    command("xsend 12 %ld", 3);
    if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) die("child 2");
    printf("read %ld\n", read_avail(x[4], &eof));

    /* A set that watched another fd before its first member came: a wait
     * that finds ring bytes reports that fd too, in the same answer, as
     * the kernel does. Extra connection 13. */
    command("more %ld", 1);
    int x5 = accept_one(l);
    int q[2];
    if (pipe(q) < 0) die("pipe q");
    int e5 = epoll_create1(0);
    struct epoll_event qe = {.events = EPOLLIN, .data.u64 = 800};
    struct epoll_event xe = {.events = EPOLLIN, .data.u64 = 801};
    if (e5 < 0 || epoll_ctl(e5, EPOLL_CTL_ADD, q[0], &qe) < 0 ||
        epoll_ctl(e5, EPOLL_CTL_ADD, x5, &xe) < 0)
        die("e5");
    command("xsend 13 %ld", 1);
    wait1("x5 first byte", e5, 5000);
    printf("read %ld\n", read_some(x5, 1));
    if (write(q[1], "q", 1) != 1) die("write q");
    command("xsend 13 %ld", 5);
    struct epoll_event ev5[4];
    r = epoll_wait(e5, ev5, 4, 5000);
    unsigned long long sum = 0;
    for (int i = 0; i < r; i++) sum += ev5[i].data.u64;
    printf("the pipe and the member in one wait: %d (data %llu)\n", r, sum);
    printf("read %ld\n", read_avail(x5, &eof));

    /* End-of-file and hang-up. */
    struct epoll_event rd = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = 11};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c, &rd) < 0) die("epoll_ctl mod rdhup");
    wait1("rdhup idle", ep, 0);
    command("send %ld", 3);
    command("shut", 0);
    wait1("rdhup after shut", ep, 5000);
    printf("read %ld\n", read_avail(c, &eof));
    printf("eof %d\n", eof);
    wait1("rdhup still", ep, 0);

    /* Hang-up: the client closes the data connection. */
    command("close", 0);
    wait1("after close", ep, 5000);
    printf("read %ld\n", read_avail(c, &eof));
    printf("eof %d\n", eof);
    command("exit", 0);
    printf("done\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 3) { fprintf(stderr, "usage: epollprog server|client PATH\n"); return 2; }
    if (!strcmp(argv[1], "server")) return server(argv[2]);
    if (!strcmp(argv[1], "client")) return client(argv[2]);
    return 2;
}
