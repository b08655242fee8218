// OpenBLAS's CBLAS and LAPACKE, as they are. Nothing but the headers and
// thread-count helpers (OpenBLAS exports them without a header Swift sees).
#ifndef SQUEEZE_COPENBLAS_SHIM_H
#define SQUEEZE_COPENBLAS_SHIM_H
#include <cblas.h>
#include <lapacke.h>

static inline void squeeze_blas_set_threads(int n) { openblas_set_num_threads(n); }
static inline int squeeze_blas_threads(void) { return openblas_get_num_threads(); }

#endif
