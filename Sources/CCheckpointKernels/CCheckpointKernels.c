// The kernels are static inline in the header (see there); this file gives SwiftPM a C source to build.
#include "CCheckpointKernels.h"
