#ifndef INTERP_CHDF5_SHIM_H
#define INTERP_CHDF5_SHIM_H
#include <hdf5.h>

/* Swift cannot import HDF5's function-like macros (they expand to comma expressions that call H5open()),
   so the ones interp uses are exposed as static inline functions. */
static inline hid_t    interp_h5t_native_float(void)   { return H5T_NATIVE_FLOAT; }
static inline hid_t    interp_h5t_native_int32(void)   { return H5T_NATIVE_INT32; }
static inline hid_t    interp_h5t_native_int64(void)   { return H5T_NATIVE_INT64; }
static inline hid_t    interp_h5t_ieee_f32le(void)     { return H5T_IEEE_F32LE; }
static inline hid_t    interp_h5t_std_i32le(void)      { return H5T_STD_I32LE; }
static inline hid_t    interp_h5t_std_i64le(void)      { return H5T_STD_I64LE; }
static inline hid_t    interp_h5t_c_s1(void)           { return H5T_C_S1; }
static inline size_t   interp_h5t_variable(void)       { return H5T_VARIABLE; }
static inline hid_t    interp_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t    interp_h5p_file_access(void)    { return H5P_FILE_ACCESS; }
static inline hid_t    interp_h5p_default(void)        { return H5P_DEFAULT; }
static inline hid_t    interp_h5s_all(void)            { return H5S_ALL; }
static inline hsize_t  interp_h5s_unlimited(void)      { return H5S_UNLIMITED; }
static inline unsigned interp_h5f_acc_trunc(void)      { return H5F_ACC_TRUNC; }
static inline unsigned interp_h5f_acc_excl(void)       { return H5F_ACC_EXCL; }
static inline unsigned interp_h5f_acc_rdonly(void)     { return H5F_ACC_RDONLY; }
/* Errors are reported by interp as one line; HDF5's own stack printing is switched off. */
static inline herr_t   interp_h5_silence_errors(void)  { return H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
#endif
