#ifndef INTERP_CBLAS_SHIM_H
#define INTERP_CBLAS_SHIM_H
#include <cblas.h>
#include <stddef.h>

/* LAPACK's symmetric eigensolver (divide and conquer), exported by OpenBLAS. Fortran calling convention: every
   argument by pointer, and the lengths of the two character arguments appended. */
void ssyevd_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda, float *w, float *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);

#endif
