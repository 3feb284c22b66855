/* A program that uses Unix-domain stream sockets the way real programs
 * do, for the preload's tests: every data call, blocking and non-blocking
 * modes, poll/select readiness, MSG_* flags, FIONREAD, shutdown, EPIPE.
 * It knows nothing of the preload; the tests run it with and without and
 * compare what it prints.
 *
 *   unixprog server PATH SCENARIO
 *   unixprog client PATH SCENARIO
 *
 * The echo scenarios (exec, execenv, pass, ioctl, splice) share one
 * client; their server hands the connection, with bytes still in flight
 * both ways, to something that knows only the socket: cat after an exec
 * (with or without the environment), a helper process that gets the fd
 * over SCM_RIGHTS, an ioctl the preload doesn't know, splice and sendfile.
 *
 * The server binds PATH, prints "listening" and serves one connection. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <spawn.h>
#include <sys/sendfile.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROG "unixprog"
#include "common.h"

static uint8_t pattern(uint64_t i) { return (uint8_t)(i * 31 + (i >> 13)); }

/* FNV-1a over a stream. */
static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
    return h;
}
#define FNV0 0xcbf29ce484222325ULL

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

static void wait_fd(int fd, short ev) {
    struct pollfd p[2] = {{fd, ev, 0}, {-1, POLLIN, 0}};
    if (poll(p, 2, 10000) <= 0) { fprintf(stderr, "unixprog: poll timed out\n"); exit(1); }
}

/* Writes all of buf with the call picked by k, blocking. */
static void put(int fd, const uint8_t *buf, size_t n, int k) {
    size_t at = 0;
    while (at < n) {
        ssize_t r;
        size_t left = n - at;
        switch (k % 4) {
        case 0: r = write(fd, buf + at, left); break;
        case 1: r = send(fd, buf + at, left, MSG_NOSIGNAL); break;
        case 2: {
            size_t h = left / 3;
            struct iovec v[3] = {{(void *)(buf + at), h}, {(void *)(buf + at + h), 0}, {(void *)(buf + at + h), left - h}};
            r = writev(fd, v, 3);
            break;
        }
        default: {
            struct iovec v[2] = {{(void *)(buf + at), left / 2}, {(void *)(buf + at + left / 2), left - left / 2}};
            struct msghdr m; memset(&m, 0, sizeof m);
            m.msg_iov = v; m.msg_iovlen = 2;
            r = sendmsg(fd, &m, 0);
        }
        }
        if (r < 0) { if (errno == EINTR) continue; die("write"); }
        at += (size_t)r;
    }
}

/* Reads up to n bytes with the call picked by k. */
static ssize_t get(int fd, uint8_t *buf, size_t n, int k) {
    switch (k % 4) {
    case 0: return read(fd, buf, n);
    case 1: return recv(fd, buf, n, 0);
    case 2: {
        struct iovec v[2] = {{buf, n / 2}, {buf + n / 2, n - n / 2}};
        return readv(fd, v, 2);
    }
    default: {
        struct iovec v[1] = {{buf, n}};
        struct msghdr m; memset(&m, 0, sizeof m);
        m.msg_iov = v; m.msg_iovlen = 1;
        return recvmsg(fd, &m, 0);
    }
    }
}

#define BULK (48u << 20)

static int serve(const char *path) {
    int l = listen_on(path, 8);
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) die("accept");
    close(l);
    return c;
}

/* bulk: the client sends BULK bytes in pieces of changing sizes with
 * changing calls; the server sums them and answers with the sum. */
static void bulk_server(int c) {
    static uint8_t buf[1 << 17];
    uint64_t h = FNV0, total = 0;
    int k = 0;
    for (;;) {
        ssize_t r = get(c, buf, 1 + (k * 7919) % sizeof buf, k);
        if (r < 0) { if (errno == EINTR) continue; die("read"); }
        if (r == 0) break;
        h = fnv(h, buf, (size_t)r);
        total += (uint64_t)r;
        k++;
    }
    char line[64];
    int n = snprintf(line, sizeof line, "%llu %016llx\n", (unsigned long long)total, (unsigned long long)h);
    put(c, (uint8_t *)line, (size_t)n, 0);
    printf("server got %s", line);
}

static void bulk_client(int s) {
    uint8_t *buf = malloc(BULK);
    for (uint64_t i = 0; i < BULK; i++) buf[i] = pattern(i);
    size_t at = 0;
    int k = 0;
    while (at < BULK) {
        size_t n = 1 + ((size_t)k * 104729) % (1u << 18);
        if (n > BULK - at) n = BULK - at;
        put(s, buf + at, n, k++);
        at += n;
    }
    shutdown(s, SHUT_WR);
    char line[64] = {0};
    size_t got = 0;
    for (;;) {
        ssize_t r = read(s, line + got, sizeof line - 1 - got);
        if (r < 0) die("read");
        if (r == 0) break;
        got += (size_t)r;
    }
    printf("client expects %u %016llx; server said %s", BULK, (unsigned long long)fnv(FNV0, buf, BULK), line);
}

/* nonblock: both sides non-blocking and driven by poll (client) and
 * select (server): the client sends BULK bytes while reading the echo. */
static void nonblock_server(int c) {
    static uint8_t buf[1 << 16];
    set_nonblock(c);
    size_t have = 0, off = 0;
    int eof = 0;
    uint64_t total = 0;
    while (!eof || have > off) {
        fd_set r, w;
        FD_ZERO(&r); FD_ZERO(&w);
        if (!eof && have == off) FD_SET(c, &r);
        if (have > off) FD_SET(c, &w);
        struct timeval tv = {10, 0};
        if (select(c + 1, &r, &w, NULL, &tv) <= 0) { fprintf(stderr, "select timed out\n"); exit(1); }
        if (FD_ISSET(c, &r)) {
            ssize_t n = recv(c, buf, sizeof buf, 0);
            if (n < 0 && errno != EAGAIN) die("recv");
            if (n == 0) eof = 1;
            if (n > 0) { have = (size_t)n; off = 0; total += (uint64_t)n; }
        }
        if (FD_ISSET(c, &w)) {
            ssize_t n = send(c, buf + off, have - off, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN) die("send");
            if (n > 0) off += (size_t)n;
        }
    }
    printf("server echoed %llu\n", (unsigned long long)total);
}

static void nonblock_client(int s) {
    uint8_t *out = malloc(BULK);
    for (uint64_t i = 0; i < BULK; i++) out[i] = pattern(i);
    static uint8_t in[1 << 16];
    set_nonblock(s);
    size_t sent = 0, recvd = 0;
    uint64_t h = FNV0;
    unsigned eagain = 0;
    while (recvd < BULK) {
        struct pollfd p = {s, POLLIN | (sent < BULK ? POLLOUT : 0), 0};
        if (poll(&p, 1, 10000) <= 0) { fprintf(stderr, "poll timed out at %zu/%zu\n", sent, recvd); exit(1); }
        if ((p.revents & POLLOUT) && sent < BULK) {
            ssize_t n = write(s, out + sent, BULK - sent < 200000 ? BULK - sent : 200000);
            if (n < 0 && errno != EAGAIN) die("write");
            if (n < 0) eagain++;
            if (n > 0) { sent += (size_t)n; if (sent == BULK) shutdown(s, SHUT_WR); }
        }
        if (p.revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(s, in, sizeof in);
            if (n < 0 && errno != EAGAIN) die("read");
            if (n < 0) eagain++;
            if (n == 0) break;
            if (n > 0) { h = fnv(h, in, (size_t)n); recvd += (size_t)n; }
        }
    }
    printf("client sent %zu, got back %zu, %s\n", sent, recvd, h == fnv(FNV0, out, BULK) ? "same bytes" : "DIFFERENT BYTES");
}

/* flags: MSG_PEEK, FIONREAD, MSG_WAITALL, MSG_DONTWAIT and EAGAIN,
 * shutdown and end-of-file, EPIPE with MSG_NOSIGNAL, SIGPIPE without. */
static void flags_server(int c) {
    char b[16] = {0};
    wait_fd(c, POLLIN);
    /* Wait until the whole message is queued. */
    int q = 0;
    for (int i = 0; i < 10000 && q < 8; i++) { if (ioctl(c, FIONREAD, &q) < 0) die("ioctl"); if (q < 8) usleep(1000); }
    printf("fionread %d\n", q);
    ssize_t n = recv(c, b, 4, MSG_PEEK);
    printf("peek %zd %.4s\n", n, b);
    n = recv(c, b, 4, 0);
    printf("recv %zd %.4s\n", n, b);
    n = recv(c, b, 8, MSG_WAITALL);
    printf("waitall %zd %.8s\n", n, b);
    errno = 0;
    n = recv(c, b, 4, MSG_DONTWAIT);
    printf("dontwait %zd %s\n", n, errno == EAGAIN ? "EAGAIN" : strerror(errno));
    put(c, (const uint8_t *)"done", 4, 0);
    n = read(c, b, sizeof b);
    printf("after shutdown %zd %s\n", n, n < 0 ? strerror(errno) : "");
    /* The client closes: writes fail with EPIPE, no signal asked for. */
    wait_fd(c, POLLIN);
    int i;
    for (i = 0; i < 100000; i++) {
        n = send(c, "x", 1, MSG_NOSIGNAL);
        if (n < 0) break;
        usleep(100);
    }
    printf("send after close %s\n", n < 0 && errno == EPIPE ? "EPIPE" : "no error");
    signal(SIGPIPE, SIG_DFL);
    n = write(c, "x", 1);
    printf("not reached %zd\n", n);
}

static void flags_client(int s) {
    char b[8];
    put(s, (const uint8_t *)"abcdefgh", 8, 0);
    /* The second half of the WAITALL read comes later. */
    usleep(20000);
    put(s, (const uint8_t *)"ijkl", 4, 0);
    ssize_t n = recv(s, b, 4, MSG_WAITALL);
    printf("client got %zd %.4s\n", n, b);
    shutdown(s, SHUT_WR);
    errno = 0;
    n = send(s, "z", 1, MSG_NOSIGNAL);
    printf("send after shutdown %zd %s\n", n, errno == EPIPE ? "EPIPE" : strerror(errno));
    close(s);
}

/* flood: the server writes until its write fails (the client is killed
 * by the test); the client reads a little, says so, and waits. */
static void flood_server(int c) {
    static uint8_t buf[1 << 16];
    for (;;) {
        ssize_t n = send(c, buf, sizeof buf, MSG_NOSIGNAL);
        if (n < 0) {
            printf("server write failed: %s\n", errno == EPIPE ? "EPIPE" : errno == ECONNRESET ? "ECONNRESET" : strerror(errno));
            return;
        }
    }
}

static void flood_client(int s) {
    static uint8_t buf[1 << 16];
    size_t got = 0;
    while (got < (4u << 20)) {
        ssize_t n = read(s, buf, sizeof buf);
        if (n <= 0) die("read");
        got += (size_t)n;
    }
    printf("reading\n");
    fflush(stdout);
    pause();
}

/* sink: the server reads until end-of-file (the writing client is killed
 * by the test) and says how it ended. */
static void sink_server(int c) {
    static uint8_t buf[1 << 16];
    /* One byte says it accepted (a client killed before the accept would
     * leave nothing to accelerate). */
    put(c, (const uint8_t *)"g", 1, 0);
    for (;;) {
        ssize_t n = read(c, buf, sizeof buf);
        if (n == 0) { printf("server read end-of-file\n"); return; }
        if (n < 0) { printf("server read failed: %s\n", strerror(errno)); return; }
    }
}

static void sink_client(int s) {
    static uint8_t buf[1 << 16];
    put(s, buf, sizeof buf, 0);
    char g;
    if (read(s, &g, 1) != 1) die("read go");
    printf("writing\n");
    fflush(stdout);
    pause();
}

/* fork: after accept the server forks; the child writes a line and exits
 * without closing; the parent waits for it, writes its own line, reads the
 * client's answer and closes. The client reads both lines, answers, and
 * reads end-of-file. */
static void fork_server(int c) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        put(c, (const uint8_t *)"child\n", 6, 0);
        /* Its close (and its exit) must leave the parent's connection as
         * it was. */
        close(c);
        exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    put(c, (const uint8_t *)"parent\n", 7, 1);
    char b[16] = {0};
    size_t got = 0;
    while (got < 4) {
        ssize_t n = read(c, b + got, 4 - got);
        if (n <= 0) die("read");
        got += (size_t)n;
    }
    printf("server got %.4s\n", b);
    close(c);
}

static void fork_client(int s) {
    char b[32] = {0};
    size_t got = 0;
    while (got < 13) {
        ssize_t n = read(s, b + got, 13 - got);
        if (n <= 0) die("read");
        got += (size_t)n;
    }
    printf("client got %s", b);
    put(s, (const uint8_t *)"bye!", 4, 0);
    ssize_t n = read(s, b, sizeof b);
    printf("then %zd\n", n);
}

/* misc: SO_RCVTIMEO, a signal without SA_RESTART (EINTR) and with it
 * (the read goes on), an fd above 1024 (dup2), close_range. The server
 * says nothing until asked, so the waits that must end without data do. */
static void on_alarm(int sig) { (void)sig; }
static const char *argv0 = "";

static void misc_server(int c) {
    char b[8];
    if (read(c, b, 5) != 5) die("read ready");
    put(c, (const uint8_t *)"late", 4, 0);
    if (read(c, b, 2) != 2) die("read go");
    usleep(50000);
    put(c, (const uint8_t *)"done", 4, 0);
    ssize_t n = read(c, b, sizeof b);
    printf("server then %zd\n", n);
}

static void misc_client(int s) {
    char b[8] = {0};
    struct timeval tv = {0, 30000};
    if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) die("setsockopt");
    errno = 0;
    ssize_t n = read(s, b, 4);
    printf("rcvtimeo %zd %s\n", n, errno == EAGAIN ? "EAGAIN" : strerror(errno));
    tv.tv_usec = 0;
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (dup2(s, 1500) != 1500) die("dup2");
    close(s);
    s = 1500;
    put(s, (const uint8_t *)"ready", 5, 0);
    /* A length the compiler can't see, into a buffer it can: FORTIFY
     * makes this __read_chk. */
    size_t want = (size_t)(strlen(argv0) > 0 ? 4 : 1);
    size_t got = 0;
    while (got < want) { n = read(s, b, want - got); if (n <= 0) die("read late"); got += (size_t)n; }
    printf("fd 1500 got %.4s\n", b);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    ualarm(20000, 0);
    errno = 0;
    n = read(s, b, 4);
    printf("no SA_RESTART %zd %s\n", n, errno == EINTR ? "EINTR" : strerror(errno));
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    put(s, (const uint8_t *)"go", 2, 0);
    ualarm(10000, 0);
    got = 0;
    while (got < 4) { n = read(s, b + got, 4 - got); if (n <= 0) { printf("read %zd %s\n", n, strerror(errno)); exit(1); } got += (size_t)n; }
    printf("SA_RESTART got %.4s\n", b);
    if (close_range(1500, 1500, 0) < 0) die("close_range");
    printf("closed %s\n", fcntl(1500, F_GETFD) < 0 && errno == EBADF ? "EBADF" : "still open");
}

/* sndtimeo: the server reads nothing until the client, whose writes
 * time out (SO_SNDTIMEO), has closed; then it drains everything. */
static void sndtimeo_server(int c) {
    static uint8_t buf[1 << 16];
    struct pollfd p = {c, POLLRDHUP, 0};
    if (poll(&p, 1, 10000) != 1) { fprintf(stderr, "no hang-up\n"); exit(1); }
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(c, buf, sizeof buf);
        if (n < 0) die("read");
        if (n == 0) break;
        total += (uint64_t)n;
    }
    printf("server drained %s\n", total > 0 ? "bytes" : "nothing");
}

static void sndtimeo_client(int s) {
    static uint8_t buf[1 << 16];
    struct timeval tv = {0, 30000};
    if (setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) die("setsockopt");
    ssize_t n;
    int rounds = 0;
    errno = 0;
    while ((n = write(s, buf, sizeof buf)) > 0 && rounds < 100000) rounds++;
    printf("sndtimeo %zd %s\n", n, errno == EAGAIN ? "EAGAIN" : strerror(errno));
    close(s);
}

/* Open fds and mapped segments of this process. */
static void leftovers(const char *who) {
    int maps = 0;
    FILE *m = fopen("/proc/self/maps", "r");
    char line[512];
    while (m && fgets(line, sizeof line, m)) if (strstr(line, "procwire-accel")) maps++;
    if (m) fclose(m);
    printf("%s maps %d\n", who, maps);
}

/* cycles: 1000 connections, one byte each way, closed; then nothing of
 * them may be left (fds counted by the test, mappings here). */
#define CYCLES 1000
static int count_fds(void) {
    int n = 0;
    for (int fd = 0; fd < 4096; fd++) if (fcntl(fd, F_GETFD) >= 0) n++;
    return n;
}

static void cycles_serve(const char *path) {
    unlink(path);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = addr_of(path);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 64) < 0) die("listen");
    int before = count_fds();
    printf("listening\n");
    for (int i = 0; i < CYCLES; i++) {
        int c = accept(l, NULL, NULL);
        if (c < 0) die("accept");
        char b;
        if (read(c, &b, 1) != 1 || write(c, &b, 1) != 1) die("echo");
        close(c);
    }
    printf("server fds %+d\n", count_fds() - before);
    leftovers("server");
}

static void cycles_dial(const char *path) {
    int before = count_fds();
    for (int i = 0; i < CYCLES; i++) {
        int s = dial(path);
        char b = 'x';
        if (write(s, &b, 1) != 1 || read(s, &b, 1) != 1) die("echo");
        close(s);
    }
    printf("client fds %+d\n", count_fds() - before);
    leftovers("client");
}

/* dups: one connection through dup, dup3 and F_DUPFD copies, closed one
 * by one; the server echoes each piece back. */
static void dups_server(int c) {
    char b[16];
    for (;;) {
        ssize_t n = read(c, b, sizeof b);
        if (n < 0) die("read");
        if (n == 0) break;
        printf("server got %.*s\n", (int)n, b);
        put(c, (const uint8_t *)b, (size_t)n, 1);
    }
}

static void dups_client(int s) {
    int d[4];
    d[0] = dup(s);
    d[1] = dup3(s, 1501, O_CLOEXEC);
    d[2] = fcntl(s, F_DUPFD, 1600);
    d[3] = fcntl(s, F_DUPFD_CLOEXEC, 1700);
    if (d[0] < 0 || d[1] != 1501 || d[2] < 1600 || d[3] < 1700) die("dup");
    close(s);
    for (int i = 0; i < 4; i++) {
        char w[8], r[8];
        int len = snprintf(w, sizeof w, "piece%d", i);
        put(d[i], (const uint8_t *)w, (size_t)len, i);
        /* Read it back through the next copy (the last through itself). */
        int via = d[i < 3 ? i + 1 : 3];
        size_t got = 0;
        while (got < (size_t)len) {
            ssize_t n = get(via, (uint8_t *)r + got, (size_t)len - got, i);
            if (n <= 0) die("read back");
            got += (size_t)n;
        }
        printf("client %.*s via copy %d\n", len, r, i < 3 ? i + 1 : 3);
        if (i < 3) close(d[i]);
    }
    close(d[3]);
}

/* The echo scenarios. */
#define ECHO_N (3u << 20)
static const char G1[] = "greeting from the server\n";
static const char G2[] = "and one more line\n";

static void echo_client(int s) {
    static uint8_t out[1 << 16], in[1 << 16];
    set_nonblock(s);
    uint64_t sent = 0, got = 0, h_out = FNV0, h_in = FNV0;
    char g[128];
    size_t glen = strlen(G1) + strlen(G2), gat = 0;
    for (;;) {
        struct pollfd p = {s, (short)(POLLIN | (sent < ECHO_N ? POLLOUT : 0)), 0};
        if (poll(&p, 1, 20000) <= 0) {
            fprintf(stderr, "unixprog: echo stalled: sent %llu got %llu\n",
                    (unsigned long long)sent, (unsigned long long)got);
            exit(1);
        }
        if ((p.revents & POLLOUT) && sent < ECHO_N) {
            size_t n = 1 + (size_t)(sent * 7) % sizeof out;
            if (n > ECHO_N - sent) n = ECHO_N - sent;
            for (size_t i = 0; i < n; i++) out[i] = pattern(sent + i);
            ssize_t r = write(s, out, n);
            if (r > 0) {
                h_out = fnv(h_out, out, (size_t)r);
                sent += (uint64_t)r;
                if (sent == ECHO_N && shutdown(s, SHUT_WR) < 0) die("shutdown");
            } else if (r < 0 && errno != EAGAIN) die("write");
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read(s, in, sizeof in);
            if (r == 0) break;
            if (r < 0) { if (errno == EAGAIN) continue; die("read"); }
            size_t off = 0;
            while (gat < glen && off < (size_t)r) g[gat++] = (char)in[off++];
            h_in = fnv(h_in, in + off, (size_t)r - off);
            got += (uint64_t)r - off;
        }
    }
    g[gat] = 0;
    printf("greeting %s", g);
    printf("echo %llu of %llu %s\n", (unsigned long long)got, (unsigned long long)sent,
           h_in == h_out && got == sent ? "exact" : "DIFFERENT");
}

/* Echoes with plain blocking calls until end-of-file. */
static void echo_plainly(int c) {
    static uint8_t buf[1 << 16];
    for (;;) {
        ssize_t n = read(c, buf, sizeof buf);
        if (n < 0) { if (errno == EINTR) continue; die("echo read"); }
        if (n == 0) return;
        put(c, buf, (size_t)n, 0);
    }
}

/* The helper of "pass": gets the connection over SCM_RIGHTS, echoes it. */
static void pass_helper(int sp) {
    char b;
    struct iovec v = {&b, 1};
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &v; m.msg_iovlen = 1;
    m.msg_control = u.buf; m.msg_controllen = sizeof u.buf;
    if (recvmsg(sp, &m, 0) != 1) die("recvmsg");
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    if (!h || h->cmsg_type != SCM_RIGHTS) { fprintf(stderr, "unixprog: no fd passed\n"); exit(1); }
    int c;
    memcpy(&c, CMSG_DATA(h), sizeof c);
    echo_plainly(c);
    exit(0);
}

static void echo_server(int c, const char *mode, int sp) {
    put(c, (const uint8_t *)G1, strlen(G1), 0);
    if (!strcmp(mode, "splice")) {
        /* The second line by sendfile from a file. */
        int f = memfd_create("g2", 0);
        if (f < 0 || write(f, G2, strlen(G2)) != (ssize_t)strlen(G2)) die("memfd");
        off_t off = 0;
        if (sendfile(c, f, &off, strlen(G2)) != (ssize_t)strlen(G2)) die("sendfile");
        close(f);
    } else {
        put(c, (const uint8_t *)G2, strlen(G2), 1);
    }
    /* The client's first bytes are here (and more are coming). */
    wait_fd(c, POLLIN);
    if (!strcmp(mode, "exec") || !strcmp(mode, "execenv")) {
        if (dup2(c, 0) != 0 || dup2(c, 1) != 1) die("dup2");
        char *argv[] = {"cat", NULL};
        if (!strcmp(mode, "exec")) execvp("cat", argv);
        char *env[] = {NULL};
        execve("/bin/cat", argv, env);
        die("exec");
    } else if (!strcmp(mode, "pass")) {
        char b = 'f';
        struct iovec v = {&b, 1};
        union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
        memset(&u, 0, sizeof u);
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = &v; m.msg_iovlen = 1;
        m.msg_control = u.buf; m.msg_controllen = sizeof u.buf;
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET; h->cmsg_type = SCM_RIGHTS; h->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(h), &c, sizeof c);
        if (sendmsg(sp, &m, 0) != 1) die("sendmsg");
        close(c);
        int st;
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "unixprog: helper failed\n"); exit(1); }
    } else if (!strcmp(mode, "vfork")) {
        /* Children that share this process's memory (vfork, posix_spawn)
         * dup, close and exec: the connection here must not notice. */
        pid_t p = vfork();
        if (p < 0) die("vfork");
        if (p == 0) {
            if (dup2(c, 100) != 100) _exit(126);
            close(c);
            close(100);
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        int st;
        if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "unixprog: vfork child failed\n"); exit(1); }
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, c, 7);
        posix_spawn_file_actions_addclose(&fa, c);
        char *argv[] = {"true", NULL};
        char *env[] = {NULL};
        if (posix_spawn(&p, "/bin/true", &fa, NULL, argv, env) != 0) die("posix_spawn");
        if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "unixprog: spawned child failed\n"); exit(1); }
        posix_spawn_file_actions_destroy(&fa);
        echo_plainly(c);
    } else if (!strcmp(mode, "ioctl")) {
        int q = -1;
        if (ioctl(c, SIOCOUTQ, &q) < 0) die("ioctl");
        echo_plainly(c);
    } else {
        int p[2];
        if (pipe(p) < 0) die("pipe");
        for (;;) {
            ssize_t n = splice(c, NULL, p[1], NULL, 1 << 16, 0);
            if (n < 0) { if (errno == EINTR) continue; die("splice in"); }
            if (n == 0) break;
            while (n > 0) {
                ssize_t m = splice(p[0], NULL, c, NULL, (size_t)n, 0);
                if (m < 0) { if (errno == EINTR) continue; die("splice out"); }
                n -= m;
            }
        }
    }
}

static int is_echo(const char *sc) {
    return !strcmp(sc, "exec") || !strcmp(sc, "execenv") || !strcmp(sc, "pass") ||
           !strcmp(sc, "ioctl") || !strcmp(sc, "splice") || !strcmp(sc, "vfork");
}

/* gen N: N bytes of a stream that differs at every 8-byte word, to stdout;
 * sum: the count and a position-dependent checksum of stdin. Fast enough
 * for gigabytes. */
static uint64_t mix(uint64_t k) {
    k += 0x9e3779b97f4a7c15ULL;
    k = (k ^ (k >> 30)) * 0xbf58476d1ce4e5b9ULL;
    return k ^ (k >> 27);
}

static int gen(uint64_t n) {
    static uint64_t buf[1 << 15];
    uint64_t k = 0;
    while (n > 0) {
        for (size_t i = 0; i < sizeof buf / 8; i++) buf[i] = mix(k++);
        size_t len = n < sizeof buf ? (size_t)n : sizeof buf;
        size_t at = 0;
        while (at < len) {
            ssize_t w = write(1, (uint8_t *)buf + at, len - at);
            if (w < 0) { if (errno == EINTR) continue; die("gen write"); }
            at += (size_t)w;
        }
        n -= len;
    }
    return 0;
}

static int sum(void) {
    static uint8_t buf[1 << 18];
    uint64_t total = 0, h = FNV0, carry = 0;
    int have = 0;
    for (;;) {
        ssize_t r = read(0, buf, sizeof buf);
        if (r < 0) { if (errno == EINTR) continue; die("sum read"); }
        if (r == 0) break;
        for (ssize_t i = 0; i < r; i++) {
            carry |= (uint64_t)buf[i] << (8 * have);
            if (++have == 8) { h = (h ^ carry) * 0x100000001b3ULL; h ^= h >> 29; carry = 0; have = 0; }
        }
        total += (uint64_t)r;
    }
    h = (h ^ carry ^ (uint64_t)have) * 0x100000001b3ULL;
    printf("%llu %016llx\n", (unsigned long long)total, (unsigned long long)h);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "gen")) return gen(strtoull(argv[2], NULL, 0));
    if (argc == 2 && !strcmp(argv[1], "sum")) return sum();
    if (argc != 4) { fprintf(stderr, "usage: unixprog server|client PATH SCENARIO\n"); return 2; }
    setvbuf(stdout, NULL, _IOLBF, 0);
    argv0 = argv[0];
    int server = strcmp(argv[1], "server") == 0;
    const char *sc = argv[3];
    if (!strcmp(sc, "cycles")) { server ? cycles_serve(argv[2]) : cycles_dial(argv[2]); return 0; }
    int sp[2] = {-1, -1};
    if (server && !strcmp(sc, "pass")) {
        /* The helper exists before the connection does. */
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) die("socketpair");
        pid_t h = fork();
        if (h < 0) die("fork");
        if (h == 0) { close(sp[0]); pass_helper(sp[1]); }
        close(sp[1]);
    }
    int fd = server ? serve(argv[2]) : dial(argv[2]);
    if (is_echo(sc)) { server ? echo_server(fd, sc, sp[0]) : echo_client(fd); return 0; }
    if (server) signal(SIGPIPE, SIG_IGN);
    if (!strcmp(sc, "bulk")) server ? bulk_server(fd) : bulk_client(fd);
    else if (!strcmp(sc, "nonblock")) server ? nonblock_server(fd) : nonblock_client(fd);
    else if (!strcmp(sc, "flags")) server ? flags_server(fd) : flags_client(fd);
    else if (!strcmp(sc, "flood")) server ? flood_server(fd) : flood_client(fd);
    else if (!strcmp(sc, "sink")) server ? sink_server(fd) : sink_client(fd);
    else if (!strcmp(sc, "fork")) server ? fork_server(fd) : fork_client(fd);
    else if (!strcmp(sc, "misc")) server ? misc_server(fd) : misc_client(fd);
    else if (!strcmp(sc, "sndtimeo")) server ? sndtimeo_server(fd) : sndtimeo_client(fd);
    else if (!strcmp(sc, "dups")) server ? dups_server(fd) : dups_client(fd);
    else { fprintf(stderr, "unixprog: no scenario %s\n", sc); return 2; }
    return 0;
}
