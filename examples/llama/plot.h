/* A self-contained SVG line plot (axes, ticks, legend), for the trainer's
 * loss curves. */
#ifndef LLAMA_PLOT_H
#define LLAMA_PLOT_H

#include <stddef.h>

typedef struct plot_series {
    const char *label;  /* legend entry; NULL: not in the legend */
    const double *x, *y;
    size_t n;           /* points; a non-finite y leaves a gap */
    int colour;         /* index into a fixed palette */
    int dashed;         /* 1: dashed line with a dot at each point */
} plot_series;

/* Writes the plot to path; 0 on success, -1 with a message in err. */
int plot_svg(const char *path, const char *title, const char *xlabel,
             const char *ylabel, const plot_series *series, size_t count,
             char *err, size_t errlen);

#endif /* LLAMA_PLOT_H */
