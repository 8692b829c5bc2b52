#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (compiler-rt, LLVM >= 11): runs the fuzzing loop with `callback` as the target, parsing the
/// usual libFuzzer flags from argv. Linked by `-sanitize=fuzzer`; declared here because Swift cannot import it.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
