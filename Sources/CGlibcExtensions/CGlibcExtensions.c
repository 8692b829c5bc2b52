#define _GNU_SOURCE
#include "CGlibcExtensions.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

int tsw_reserve_blocks(int fd, long long bytes) {
#if defined(__linux__)
    return fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)bytes) == 0 ? 0 : errno;
#else
    (void)fd;
    (void)bytes;
    return EOPNOTSUPP;
#endif
}

int tsw_keep_freed_heap(int mmap_threshold) {
#if defined(__GLIBC__)
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) && mallopt(M_TRIM_THRESHOLD, INT_MAX);
#else
    (void)mmap_threshold;
    return 0;
#endif
}
