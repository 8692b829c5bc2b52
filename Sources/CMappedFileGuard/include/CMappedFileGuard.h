#ifndef CMAPPEDFILEGUARD_H
#define CMAPPEDFILEGUARD_H

#include <stddef.h>

/// Registers a read-only mapping of `path` so that a SIGBUS inside it (the file was truncated while mapped) ends
/// the process with a message naming the file instead of a crash, and records the file's identity (device, inode,
/// size, modification time) for `tsw_guard_changed_input`. Installs the SIGBUS handler on first use.
/// Returns a slot for `tsw_guard_unregister`, or -1 when the table is full (the mapping is then unguarded).
int tsw_guard_register(const void *base, size_t size, const char *path, int fd);

/// Forgets a mapping before it is unmapped.
void tsw_guard_unregister(int slot);

/// Re-checks every registered file by path: returns the slot of the first whose device, inode, size or
/// modification time differs from when it was registered (or which is gone), else -1.
int tsw_guard_changed_input(void);

/// The path registered in `slot` (valid until the slot is unregistered).
const char *tsw_guard_path(int slot);

#endif
