// Thin shims over Open MPI: its handles are macros that Swift cannot import.
// No logic lives here; every helper is a prefixed `static inline` returning a constant.
#ifndef SQUEEZE_CMPI_SHIM_H
#define SQUEEZE_CMPI_SHIM_H
#include <mpi.h>

static inline MPI_Comm squeeze_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm squeeze_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype squeeze_type_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype squeeze_type_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype squeeze_type_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype squeeze_type_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype squeeze_type_uint8(void) { return MPI_UINT8_T; }
static inline MPI_Op squeeze_op_sum(void) { return MPI_SUM; }
static inline MPI_Op squeeze_op_max(void) { return MPI_MAX; }
static inline MPI_Op squeeze_op_min(void) { return MPI_MIN; }
static inline MPI_Info squeeze_info_null(void) { return MPI_INFO_NULL; }
static inline MPI_Errhandler squeeze_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Request squeeze_request_null(void) { return MPI_REQUEST_NULL; }
static inline void *squeeze_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Status *squeeze_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline int squeeze_any_source(void) { return MPI_ANY_SOURCE; }
static inline int squeeze_undefined(void) { return MPI_UNDEFINED; }
static inline int squeeze_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int squeeze_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int squeeze_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int squeeze_success(void) { return MPI_SUCCESS; }
static inline int squeeze_comm_type_shared(void) { return MPI_COMM_TYPE_SHARED; }
static inline int squeeze_status_source(const MPI_Status *s) { return s->MPI_SOURCE; }
static inline MPI_Win squeeze_win_null(void) { return MPI_WIN_NULL; }

#endif
