#ifndef INTERP_CBLAS_SHIM_H
#define INTERP_CBLAS_SHIM_H
#include <cblas.h>
#endif
