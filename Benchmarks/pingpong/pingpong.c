// pingpong: the floor for remote-memory latency on this machine. A client sends a 40-byte
// request header and gets a 40-byte header + 4 KiB back over loopback TCP with blocking
// sockets and TCP_NODELAY — the same bytes a MemX READ of one page moves — and reports the
// round-trip latency distribution. No MemX code is involved.
//
// Build: cc -O2 -o pingpong pingpong.c
// Usage: pingpong [iterations (default 200000)] [payload bytes (default 4096)]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int payload = 4096;
enum { header = 40 };

static int full_read(int fd, char *buf, int n) {
    for (int done = 0; done < n;) {
        ssize_t r = read(fd, buf + done, n - done);
        if (r <= 0) return -1;
        done += (int)r;
    }
    return 0;
}

static int full_write(int fd, const char *buf, int n) {
    for (int done = 0; done < n;) {
        ssize_t r = write(fd, buf + done, n - done);
        if (r <= 0) return -1;
        done += (int)r;
    }
    return 0;
}

static void *serve(void *arg) {
    int listener = *(int *)arg;
    int fd = accept(listener, NULL, NULL);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char *buf = calloc(1, header + payload);
    while (full_read(fd, buf, header) == 0) {
        if (full_write(fd, buf, header + payload) != 0) break;
    }
    close(fd);
    free(buf);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 200000;
    if (argc > 2) payload = atoi(argv[2]);
    if (iterations < 100 || payload < 0 || payload > (1 << 20)) {
        fprintf(stderr, "usage: pingpong [iterations >= 100] [payload bytes <= 1 MiB]\n");
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 1) ||
        getsockname(listener, (struct sockaddr *)&addr, &len)) {
        perror("listen");
        return 1;
    }
    pthread_t thread;
    pthread_create(&thread, NULL, serve, &listener);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr)) {
        perror("connect");
        return 1;
    }
    char *buf = calloc(1, header + payload);
    long *ns = malloc(sizeof(long) * iterations);
    for (long i = 0; i < iterations / 10; i++) {  // warm-up
        full_write(fd, buf, header);
        full_read(fd, buf, header + payload);
    }
    struct timespec a, b, start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < iterations; i++) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (full_write(fd, buf, header) || full_read(fd, buf, header + payload)) {
            fprintf(stderr, "connection lost\n");
            return 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        ns[i] = (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    qsort(ns, iterations, sizeof(long), cmp);
    double seconds = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
    printf("pingpong %d-byte reply: %ld round trips, %.0f/s, p50 %.1f us, p99 %.1f us, p99.9 %.1f us\n", payload,
           iterations, iterations / seconds, ns[iterations / 2] / 1e3, ns[iterations * 99 / 100] / 1e3,
           ns[iterations * 999 / 1000] / 1e3);
    close(fd);
    pthread_join(thread, NULL);
    return 0;
}
