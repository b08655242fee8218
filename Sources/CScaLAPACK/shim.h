// ScaLAPACK and BLACS ship no C header: these are the prototypes Squeeze calls,
// exactly as the Fortran/C symbols are exported by libscalapack-openmpi.
#ifndef SQUEEZE_CSCALAPACK_SHIM_H
#define SQUEEZE_CSCALAPACK_SHIM_H

void Cblacs_pinfo(int *mypnum, int *nprocs);
void Cblacs_get(int context, int request, int *value);
void Cblacs_gridinit(int *context, const char *order, int nprow, int npcol);
void Cblacs_gridinfo(int context, int *nprow, int *npcol, int *myrow, int *mycol);
void Cblacs_gridexit(int context);
void Cblacs_exit(int doneflag);

int numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc, const int *nprocs);
void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb,
               const int *irsrc, const int *icsrc, const int *ictxt, const int *lld, int *info);

void psgemr2d_(const int *m, const int *n, const float *a, const int *ia, const int *ja, const int *desca,
               float *b, const int *ib, const int *jb, const int *descb, const int *ictxt);
void pdgemr2d_(const int *m, const int *n, const double *a, const int *ia, const int *ja, const int *desca,
               double *b, const int *ib, const int *jb, const int *descb, const int *ictxt);

void psgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n,
              float *a, const int *ia, const int *ja, const int *desca, float *s,
              float *u, const int *iu, const int *ju, const int *descu,
              float *vt, const int *ivt, const int *jvt, const int *descvt,
              float *work, const int *lwork, int *info);
void pdgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n,
              double *a, const int *ia, const int *ja, const int *desca, double *s,
              double *u, const int *iu, const int *ju, const int *descu,
              double *vt, const int *ivt, const int *jvt, const int *descvt,
              double *work, const int *lwork, int *info);

/// Row-major grid order string for Cblacs_gridinit.
static inline const char *squeeze_blacs_row_order(void) { return "Row"; }

#endif
