/* io_uring POLL_ADD on a Unix-domain stream connection, for the preload's
 * fast-mode tests: the poll completes when the peer sends, whether the
 * connection is in no epoll set or in one whose waits the program also
 * makes (fast mode then must keep the doorbells the kernel's poll needs).
 * It knows nothing of the preload; the tests run it with and without and
 * compare what it prints. The ring is driven by raw system calls (no
 * liburing).
 *
 *   uringprog server PATH     serves one client
 *   uringprog client PATH     sends when told: 'p' one byte, 'g' five
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define PROG "uringprog"
#include "common.h"

static int client(const char *path) {
    int c = dial(path);
    char cmd;
    while (read(c, &cmd, 1) == 1) {
        const char *what = cmd == 'p' ? "x" : "yyyyy";
        if (write(c, what, strlen(what)) < 0) die("write");
    }
    return 0;
}

static int ring_fd;
static unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;

static int uring_setup(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    ring_fd = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (ring_fd < 0) return -1;
    size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single) {
        if (cq_sz > sq_sz) sq_sz = cq_sz;
        cq_sz = sq_sz;
    }
    char *sq = mmap(0, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd,
                    IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED) die("mmap sq");
    char *cq = sq;
    if (!single) {
        cq = mmap(0, cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd,
                  IORING_OFF_CQ_RING);
        if (cq == MAP_FAILED) die("mmap cq");
    }
    sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQES);
    if (sqes == MAP_FAILED) die("mmap sqes");
    sq_tail = (unsigned *)(sq + p.sq_off.tail);
    sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    sq_array = (unsigned *)(sq + p.sq_off.array);
    cq_head = (unsigned *)(cq + p.cq_off.head);
    cq_tail = (unsigned *)(cq + p.cq_off.tail);
    cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
}

static void submit_poll(int fd) {
    unsigned tail = *sq_tail;
    unsigned idx = tail & *sq_mask;
    struct io_uring_sqe *s = &sqes[idx];
    memset(s, 0, sizeof *s);
    s->opcode = IORING_OP_POLL_ADD;
    s->fd = fd;
    s->poll32_events = POLLIN;
    s->user_data = 42;
    sq_array[idx] = idx;
    __atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
    if (syscall(__NR_io_uring_enter, ring_fd, 1, 0, 0, NULL, 0) != 1) die("io_uring_enter submit");
}

static void on_alarm(int sig) { (void)sig; }

/* The poll's result, or -1 if five seconds passed without one. */
static int wait_cqe(void) {
    alarm(5);
    for (;;) {
        unsigned head = *cq_head;
        if (head != __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE)) {
            int res = cqes[head & *cq_mask].res;
            __atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
            alarm(0);
            return res;
        }
        long r = syscall(__NR_io_uring_enter, ring_fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0);
        if (r < 0 && errno == EINTR) return -1;
        if (r < 0) die("io_uring_enter wait");
    }
}

/* Tells the client `cmd`, then polls `c` through the ring. */
static void poll_once(const char *what, int c, char cmd, long want) {
    submit_poll(c);
    if (write(c, &cmd, 1) != 1) die("command");
    int res = wait_cqe();
    char buf[16];
    long got = 0;
    while (res > 0 && got < want) {
        ssize_t r = read(c, buf, sizeof buf);
        if (r <= 0) die("read");
        got += r;
    }
    printf("%s: %s, read %ld\n", what, res < 0 ? "no completion in 5 s" : (res & POLLIN) ? "POLLIN" : "?",
           got);
}

static int server(const char *path) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    int l = listen_on(path, 4);
    int c = accept(l, NULL, NULL);
    if (c < 0) die("accept");
    if (uring_setup() < 0) {
        printf("no io_uring: %s\n", strerror(errno));
        printf("done\n");
        return 0;
    }
    /* In no epoll set. */
    poll_once("poll_add, no set", c, 'p', 1);
    /* In a set the program waits on: one byte through it, then a wait
     * that sleeps and ends (fast mode takes arms back after such a wait
     * where nothing else relies on them). */
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 1};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, c, &e) < 0) die("epoll_ctl");
    if (write(c, "p", 1) != 1) die("prime");
    struct epoll_event ev[2];
    char b;
    if (epoll_wait(ep, ev, 2, 5000) != 1 || read(c, &b, 1) != 1) die("primed");
    printf("idle wait: %d\n", epoll_wait(ep, ev, 2, 10));
    poll_once("poll_add, in a set", c, 'g', 5);
    printf("done\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 3) { fprintf(stderr, "usage: uringprog server|client PATH\n"); return 2; }
    if (!strcmp(argv[1], "server")) return server(argv[2]);
    if (!strcmp(argv[1], "client")) return client(argv[2]);
    return 2;
}
