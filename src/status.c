/* Version numbers and the names and sentences of status codes. */
#include "internal.h"

uint32_t owl_version_number(void) { return OWL_VERSION_NUMBER; }

const char *owl_version_string(void) { return OWL_VERSION_STRING; }

typedef struct {
    owl_status status;
    const char *name;
    const char *text;
} status_entry;

static const status_entry status_table[] = {
    {OWL_OK, "OWL_OK", "success"},
    {OWL_ERR_INVALID_ARGUMENT, "OWL_ERR_INVALID_ARGUMENT", "an argument is out of its valid range"},
    {OWL_ERR_NULL_POINTER, "OWL_ERR_NULL_POINTER", "a required pointer is NULL"},
    {OWL_ERR_SHAPE, "OWL_ERR_SHAPE", "tensor shapes or strides do not fit"},
    {OWL_ERR_DTYPE, "OWL_ERR_DTYPE", "a tensor has a dtype not allowed here"},
    {OWL_ERR_OUT_OF_MEMORY, "OWL_ERR_OUT_OF_MEMORY", "out of memory"},
    {OWL_ERR_NONFINITE, "OWL_ERR_NONFINITE", "an input holds NaN or Inf; nothing was changed"},
    {OWL_ERR_NUMERICAL, "OWL_ERR_NUMERICAL", "a numerical routine failed (e.g. SVD did not converge)"},
    {OWL_ERR_UNSUPPORTED, "OWL_ERR_UNSUPPORTED", "not supported by this build or backend"},
    {OWL_ERR_NO_DEVICE, "OWL_ERR_NO_DEVICE", "no usable CUDA device"},
    {OWL_ERR_DEVICE, "OWL_ERR_DEVICE", "a device runtime or library call failed"},
    {OWL_ERR_IO, "OWL_ERR_IO", "reading or writing a file failed"},
    {OWL_ERR_CORRUPT, "OWL_ERR_CORRUPT", "state data failed its integrity checks"},
    {OWL_ERR_VERSION, "OWL_ERR_VERSION", "state data has an unsupported version"},
    {OWL_ERR_STRUCT_SIZE, "OWL_ERR_STRUCT_SIZE", "an options struct has an invalid struct_size"},
    {OWL_ERR_STATE, "OWL_ERR_STATE", "the call is not valid in the handle's current state"},
    {OWL_ERR_MISMATCH, "OWL_ERR_MISMATCH", "handles or state do not belong together"},
    {OWL_ERR_INTERNAL, "OWL_ERR_INTERNAL", "internal error"},
};

static const status_entry *find_status(owl_status s)
{
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++)
        if (status_table[i].status == s)
            return &status_table[i];
    return NULL;
}

const char *owl_status_string(owl_status status)
{
    const status_entry *e = find_status(status);
    return e ? e->text : "unknown status code";
}

const char *owl_status_name(owl_status status)
{
    const status_entry *e = find_status(status);
    return e ? e->name : "OWL_UNKNOWN";
}
