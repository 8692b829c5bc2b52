// Guards memory-mapped inputs against being truncated or rewritten while they are read (docs/robustness.md).
//
// Truncating a mapped file makes the next access to a page past the new end raise SIGBUS. The handler looks the
// faulting address up in a fixed table of registered mappings and, if it is one of ours, writes one line naming the
// file and exits with status 74 (EX_IOERR) using only async-signal-safe calls. Outputs are written under temporary
// names and renamed into place last, so the target never holds a partial model. A fault outside every
// registered mapping re-installs the previous handler (the Swift runtime's backtracer, or the default) and
// returns, so the fault repeats and is reported as before.
#define _GNU_SOURCE
#include "CMappedFileGuard.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLOTS 4096

struct slot {
    _Atomic(int) used;  // 1 once base/size/path are published
    uintptr_t base;
    size_t size;
    char *path;
    dev_t dev;
    ino_t ino;
    off_t length;
    struct timespec mtime;
};

static struct slot table[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction previous;
static int installed;

static void say(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void on_sigbus(int sig, siginfo_t *info, void *context) {
    (void)context;
    uintptr_t at = (uintptr_t)info->si_addr;
    for (int i = 0; i < SLOTS; i++) {
        if (atomic_load_explicit(&table[i].used, memory_order_acquire) != 1) continue;
        if (at >= table[i].base && at - table[i].base < table[i].size) {
            // Several threads can fault on the truncated file at once: one reports and exits, the others wait
            // for that exit so the user sees one line.
            static atomic_flag reporting = ATOMIC_FLAG_INIT;
            if (atomic_flag_test_and_set(&reporting)) {
                for (;;) pause();
            }
            say("tswitch: error: ");
            say(table[i].path);
            say(" changed or was truncated while being read; nothing was written to the output (only a hidden "
                "temporary file may remain beside it). Run the command again once the file is complete.\n");
            _exit(74);
        }
    }
    sigaction(sig, &previous, NULL);  // not ours: let the fault repeat into the previous handler
}

static void install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &previous);
    installed = 1;
}

int tsw_guard_register(const void *base, size_t size, const char *path, int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    char *copy = strdup(path);
    if (!copy) return -1;
    pthread_mutex_lock(&lock);
    if (!installed) install();
    int found = -1;
    for (int i = 0; i < SLOTS; i++) {
        if (atomic_load_explicit(&table[i].used, memory_order_relaxed) == 0) {
            found = i;
            break;
        }
    }
    if (found >= 0) {
        struct slot *s = &table[found];
        s->base = (uintptr_t)base;
        s->size = size;
        s->path = copy;
        s->dev = st.st_dev;
        s->ino = st.st_ino;
        s->length = st.st_size;
        s->mtime = st.st_mtim;
        atomic_store_explicit(&s->used, 1, memory_order_release);
    } else {
        free(copy);
    }
    pthread_mutex_unlock(&lock);
    return found;
}

void tsw_guard_unregister(int slot) {
    if (slot < 0 || slot >= SLOTS) return;
    pthread_mutex_lock(&lock);
    atomic_store_explicit(&table[slot].used, 0, memory_order_release);
    // The handler may still be reading the path on another thread only if that thread is faulting inside this
    // very mapping, which the caller is about to unmap: it cannot be reading it any more.
    free(table[slot].path);
    table[slot].path = NULL;
    pthread_mutex_unlock(&lock);
}

int tsw_guard_changed_input(void) {
    int changed = -1;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < SLOTS && changed < 0; i++) {
        struct slot *s = &table[i];
        if (atomic_load_explicit(&s->used, memory_order_relaxed) != 1) continue;
        struct stat st;
        if (stat(s->path, &st) != 0 || st.st_dev != s->dev || st.st_ino != s->ino || st.st_size != s->length
            || st.st_mtim.tv_sec != s->mtime.tv_sec || st.st_mtim.tv_nsec != s->mtime.tv_nsec)
            changed = i;
    }
    pthread_mutex_unlock(&lock);
    return changed;
}

const char *tsw_guard_path(int slot) {
    if (slot < 0 || slot >= SLOTS) return "";
    return table[slot].path ? table[slot].path : "";
}
