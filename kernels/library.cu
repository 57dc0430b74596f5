// Host-side helpers of libmnt_kernels.so that belong to no one op.
#include <cuda_runtime.h>

// The CUDA runtime's name for an error code a launcher returned (e.g. "cudaErrorInvalidValue").
extern "C" const char* mnt_kernels_error_name(int code) { return cudaGetErrorName(static_cast<cudaError_t>(code)); }
