/* What the preload's test programs share: dying with the reason, and the
 * Unix-domain sockets they listen on and dial. A program defines PROG (its
 * name, for messages) before it includes this. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define UNUSED_OK __attribute__((unused))

/* Ends the program with what failed and errno's text. */
static UNUSED_OK void die(const char *what) {
    fprintf(stderr, "%s: %s: %s\n", PROG, what, strerror(errno));
    exit(1);
}

static UNUSED_OK struct sockaddr_un addr_of(const char *path) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    return a;
}

/* A stream connection to the socket at `path`. */
static UNUSED_OK int dial(const char *path) {
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = addr_of(path);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    return s;
}

/* A socket listening at `path` (what was there is removed); then prints
 * "listening", which the tests wait for before they start the client. */
static UNUSED_OK int listen_on(const char *path, int backlog) {
    unlink(path);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = addr_of(path);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, backlog) < 0)
        die("listen");
    printf("listening\n");
    fflush(stdout);
    return l;
}
