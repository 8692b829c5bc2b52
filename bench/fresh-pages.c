// What a first touch costs on this machine (docs/bench-merge.md, "Fresh pages are the cost on this VM"):
// memcpy into touched vs fresh anonymous memory, and write() of the same bytes into a fresh file, plain and after
// reserving its blocks (fallocate FALLOC_FL_KEEP_SIZE, what tswitch's outputs do). On a VM whose balloon reports
// freed pages to the host, the fresh cases pay a host fault per page.
//
// Build and run: gcc -O2 -o /tmp/fresh-pages bench/fresh-pages.c && /tmp/fresh-pages 800 bench/out/probe
// (arguments: MB, a scratch file path on the file system to measure; the file is removed).
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double write_file(const char *path, const char *src, size_t n, int reserve) {
    unlink(path);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0) { perror(path); exit(1); }
    double t = now();
    if (reserve && fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)n) != 0) perror("fallocate");
    for (size_t o = 0; o < n;) {
        ssize_t w = write(fd, src + o, n - o < (64u << 20) ? n - o : (64u << 20));
        if (w <= 0) { perror("write"); exit(1); }
        o += (size_t)w;
    }
    double d = now() - t;
    close(fd);
    unlink(path);
    return d;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s MB SCRATCH_FILE\n", argv[0]); return 2; }
    size_t n = (size_t)atol(argv[1]) << 20;
    char *src = malloc(n), *dst = malloc(n);
    memset(src, 1, n);
    memset(dst, 2, n);
    double t = now();
    memcpy(dst, src, n);
    printf("memcpy into touched memory: %.1f GB/s\n", n / (now() - t) / 1e9);
    char *fresh = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    t = now();
    memcpy(fresh, src, n);
    printf("memcpy into fresh anonymous memory: %.1f GB/s\n", n / (now() - t) / 1e9);
    munmap(fresh, n);
    for (int round = 0; round < 3; round++) {
        double plain = write_file(argv[2], src, n, 0), reserved = write_file(argv[2], src, n, 1);
        printf("write() %zu MB into a fresh file: plain %.3f s, blocks reserved first %.3f s\n", n >> 20, plain,
               reserved);
    }
    return 0;
}
