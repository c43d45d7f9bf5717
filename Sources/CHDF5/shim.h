#ifndef INTERP_CHDF5_SHIM_H
#define INTERP_CHDF5_SHIM_H
#include <hdf5.h>

/* Swift cannot import HDF5's function-like macros (they expand to comma expressions that call H5open()),
   so the ones interp uses are exposed as static inline functions. */
static inline hid_t    interp_h5t_native_float(void)   { return H5T_NATIVE_FLOAT; }
static inline hid_t    interp_h5t_native_double(void)  { return H5T_NATIVE_DOUBLE; }
static inline hid_t    interp_h5t_native_int32(void)   { return H5T_NATIVE_INT32; }
static inline hid_t    interp_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t    interp_h5p_file_access(void)    { return H5P_FILE_ACCESS; }
static inline hid_t    interp_h5p_default(void)        { return H5P_DEFAULT; }
static inline hsize_t  interp_h5s_unlimited(void)      { return H5S_UNLIMITED; }
static inline unsigned interp_h5f_acc_trunc(void)      { return H5F_ACC_TRUNC; }
static inline unsigned interp_h5f_acc_rdonly(void)     { return H5F_ACC_RDONLY; }
static inline unsigned interp_h5f_acc_rdwr(void)       { return H5F_ACC_RDWR; }
#endif
