// oneDNN's C API (Debian's libdnnl-dev, oneDNN 2.x, OpenMP CPU runtime), as it is. Nothing but the
// header, the argument indices (macros of macros, which Swift does not import) and the two
// OpenMP calls that set the thread count of oneDNN's parallel regions (libgomp has no header
// Swift sees; Debian's libdnnl2 is linked against it).
#ifndef SQUEEZE_CDNNL_SHIM_H
#define SQUEEZE_CDNNL_SHIM_H
#include <oneapi/dnnl/dnnl.h>

static inline int squeeze_dnnl_arg_src(void) { return DNNL_ARG_SRC; }
static inline int squeeze_dnnl_arg_weights(void) { return DNNL_ARG_WEIGHTS; }
static inline int squeeze_dnnl_arg_dst(void) { return DNNL_ARG_DST; }
static inline int squeeze_dnnl_arg_scratchpad(void) { return DNNL_ARG_SCRATCHPAD; }

/// OpenMP (libgomp): threads of the calling thread's next parallel regions (a per-thread setting).
int omp_get_max_threads(void);
void omp_set_num_threads(int n);

#endif
