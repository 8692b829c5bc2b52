// Memory bandwidth floor for bench/read-bench: copies a 1 GiB buffer with memcpy, split across THREADS threads,
// best of several passes. Prints one JSON line: bytes copied per second (each byte is read once and written once).
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t total = (size_t)1 << 30;
static char *src, *dst;
static int threads;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *work(void *arg) {
    size_t i = (size_t)arg, per = total / threads;
    memcpy(dst + i * per, src + i * per, per);
    return NULL;
}

int main(int argc, char **argv) {
    threads = argc > 1 ? atoi(argv[1]) : 2;
    int passes = argc > 2 ? atoi(argv[2]) : 5;
    src = aligned_alloc(4096, total);
    dst = aligned_alloc(4096, total);
    memset(src, 1, total);
    memset(dst, 2, total);
    double best = 1e30;
    for (int p = 0; p < passes; p++) {
        pthread_t tid[64];
        double t0 = now();
        for (int i = 0; i < threads; i++) pthread_create(&tid[i], NULL, work, (void *)(size_t)i);
        for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
        double t = now() - t0;
        if (t < best) best = t;
    }
    printf("{\"threads\": %d, \"bytes\": %zu, \"best_s\": %.4f, \"copy_gbps\": %.3f, \"check\": %d}\n", threads, total,
           best, total / best / 1e9, dst[total / 2]);
    return 0;
}
