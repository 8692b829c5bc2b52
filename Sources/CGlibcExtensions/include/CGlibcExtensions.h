#ifndef CGLIBCEXTENSIONS_H
#define CGLIBCEXTENSIONS_H

// GNU extensions of glibc that the Swift Glibc module does not export (they need _GNU_SOURCE or <malloc.h>).

/// Reserves the blocks of the first `bytes` of `fd`'s file without changing its size (fallocate with
/// FALLOC_FL_KEEP_SIZE). Returns 0, or the errno (EOPNOTSUPP where the file system has no fallocate).
int tsw_reserve_blocks(int fd, long long bytes);

/// Serves blocks up to `mmap_threshold` bytes from the heap and never returns freed heap to the kernel
/// (mallopt M_MMAP_THRESHOLD, M_TRIM_THRESHOLD). Returns 1 on success.
int tsw_keep_freed_heap(int mmap_threshold);

#endif
