// OpenBLAS's CBLAS interface, from Debian's libopenblas-dev.
#include <cblas.h>
#include <stddef.h>

// The LAPACK routines libopenblas also exports (Debian ships no lapack.h with it). Fortran calling convention:
// every argument by pointer, column-major matrices, and a hidden length after the arguments for each
// CHARACTER argument (gfortran passes it as size_t).
void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda, float *s, float *u,
             const int *ldu, float *vt, const int *ldvt, float *work, const int *lwork, int *iwork, int *info,
             size_t jobz_len);
void sgeqrf_(const int *m, const int *n, float *a, const int *lda, float *tau, float *work, const int *lwork,
             int *info);
void sorgqr_(const int *m, const int *n, const int *k, float *a, const int *lda, const float *tau, float *work,
             const int *lwork, int *info);
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);
