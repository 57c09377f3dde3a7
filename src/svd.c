/* Thin SVD helpers for the projector: exact (LAPACK gesdd) and randomized
 * (range finder + small SVD), with canonical signs. */
#include "internal.h"
