/*
 * A request/response load over a Unix socket, for benches/preload_pingpong.sh:
 * the pattern of redis-benchmark -P 1 without Redis's own work, so that
 * what the preload adds per message is a larger share of the time.
 *
 *   pingpong server PATH CONNS     serves CONNS connections, then exits
 *   pingpong client PATH CONNS N   N round trips over CONNS connections;
 *                                  prints round trips per second
 *
 * Both sides wait in epoll_wait; a request is 37 bytes (a RESP GET), a
 * reply 9. Every call is checked; any failure exits non-zero.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char REQ[] = "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000000\r\n";
static const char REP[] = "$3\r\nabc\r\n";

static void die(const char *what) {
  perror(what);
  exit(1);
}

static double now(void) {
  struct timespec t;
  if (clock_gettime(CLOCK_MONOTONIC, &t) != 0) die("clock_gettime");
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The server keeps a count of request bytes per fd below this. */
#define MAX_FD 65536

/* Waits for events, again after a signal. */
static int wait_events(int ep, struct epoll_event *ev, int max) {
  for (;;) {
    int n = epoll_wait(ep, ev, max, -1);
    if (n >= 0) return n;
    if (errno != EINTR) die("epoll_wait");
  }
}

static void watch(int ep, int fd, unsigned long long data) {
  struct epoll_event e = {.events = EPOLLIN, .data.u64 = data};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) != 0) die("epoll_ctl");
}

static int server(struct sockaddr_un *a, int conns) {
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  if (l < 0) die("socket");
  unlink(a->sun_path);
  if (bind(l, (struct sockaddr *)a, sizeof *a) != 0) die("bind");
  if (listen(l, 128) != 0) die("listen");
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  watch(ep, l, (unsigned long long)l);
  int live = 0, seen = 0;
  static size_t got[MAX_FD];
  char buf[4096];
  struct epoll_event ev[64];
  for (;;) {
    int n = wait_events(ep, ev, 64);
    for (int i = 0; i < n; i++) {
      int fd = (int)ev[i].data.u64;
      if (fd == l) {
        int c = accept4(l, NULL, NULL, SOCK_NONBLOCK);
        if (c < 0) die("accept4");
        if (c >= MAX_FD) {
          fprintf(stderr, "fd %d: too many fds\n", c);
          exit(1);
        }
        watch(ep, c, (unsigned long long)c);
        got[c] = 0;
        live++;
        seen++;
        continue;
      }
      ssize_t r = read(fd, buf, sizeof buf);
      if (r < 0) {
        if (errno == EAGAIN) continue;
        die("read");
      }
      if (r == 0) {
        close(fd);
        if (--live == 0 && seen >= conns) return 0;
        continue;
      }
      /* One reply per whole request (a request may come in parts). */
      got[fd] += (size_t)r;
      while (got[fd] >= sizeof REQ - 1) {
        got[fd] -= sizeof REQ - 1;
        if (write(fd, REP, sizeof REP - 1) != (ssize_t)(sizeof REP - 1)) die("write");
      }
    }
  }
}

static int client(struct sockaddr_un *a, int conns, long rounds) {
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  int *fds = calloc((size_t)conns, sizeof *fds);
  long *left = calloc((size_t)conns, sizeof *left);
  size_t *got = calloc((size_t)conns, sizeof *got);
  if (!fds || !left || !got) die("calloc");
  for (int i = 0; i < conns; i++) {
    fds[i] = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fds[i] < 0) die("socket");
    if (connect(fds[i], (struct sockaddr *)a, sizeof *a) != 0) die("connect");
    if (fcntl(fds[i], F_SETFL, O_NONBLOCK) != 0) die("fcntl");
    watch(ep, fds[i], (unsigned long long)i);
    left[i] = rounds / conns;
  }
  double t0 = now();
  int active = conns;
  for (int i = 0; i < conns; i++)
    if (write(fds[i], REQ, sizeof REQ - 1) != (ssize_t)(sizeof REQ - 1)) die("write");
  char buf[4096];
  struct epoll_event ev[64];
  while (active > 0) {
    int n = wait_events(ep, ev, 64);
    for (int k = 0; k < n; k++) {
      int i = (int)ev[k].data.u64;
      ssize_t r = read(fds[i], buf, sizeof buf);
      if (r < 0) {
        if (errno == EAGAIN) continue;
        die("read");
      }
      if (r == 0) {
        fprintf(stderr, "the server closed a connection\n");
        return 1;
      }
      got[i] += (size_t)r;
      if (got[i] < sizeof REP - 1) continue;
      got[i] -= sizeof REP - 1;
      if (--left[i] > 0) {
        if (write(fds[i], REQ, sizeof REQ - 1) != (ssize_t)(sizeof REQ - 1)) die("write");
      } else {
        active--;
      }
    }
  }
  double t = now() - t0;
  printf("%.0f\n", (double)(rounds / conns * conns) / t);
  for (int i = 0; i < conns; i++) close(fds[i]);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4 || (strcmp(argv[1], "client") == 0 && argc < 5)) {
    fprintf(stderr, "usage: pingpong server PATH CONNS | client PATH CONNS N\n");
    return 2;
  }
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(argv[2]) >= sizeof a.sun_path) {
    fprintf(stderr, "path too long\n");
    return 2;
  }
  strcpy(a.sun_path, argv[2]);
  int conns = atoi(argv[3]);
  if (conns < 1) {
    fprintf(stderr, "CONNS must be at least 1\n");
    return 2;
  }
  if (strcmp(argv[1], "server") == 0) return server(&a, conns);
  long rounds = atol(argv[4]);
  if (rounds < conns) {
    fprintf(stderr, "N must be at least CONNS\n");
    return 2;
  }
  return client(&a, conns, rounds);
}
