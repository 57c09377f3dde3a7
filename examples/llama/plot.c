#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { WIDTH = 760, HEIGHT = 460, LEFT = 70, RIGHT = 170, TOP = 40,
       BOTTOM = 55 };

static const char *const palette[] = {
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f",
};

/* A "nice" tick spacing (1, 2 or 5 times a power of ten) giving about
 * `want` intervals over span. */
static double nice_step(double span, int want)
{
    double raw = span / want, p = pow(10.0, floor(log10(raw)));
    double f = raw / p;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * p;
}

/* Writes text with the XML special characters escaped. */
static void put_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

int plot_svg(const char *path, const char *title, const char *xlabel,
             const char *ylabel, const plot_series *series, size_t count,
             char *err, size_t errlen)
{
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (size_t s = 0; s < count; s++)
        for (size_t i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (!isfinite(x) || !isfinite(y))
                continue;
            x0 = fmin(x0, x); x1 = fmax(x1, x);
            y0 = fmin(y0, y); y1 = fmax(y1, y);
        }
    if (!(x0 <= x1)) {
        snprintf(err, errlen, "plot %s: no finite points", path);
        return -1;
    }
    if (x1 - x0 <= 0) { x0 -= 1; x1 += 1; }
    if (y1 - y0 <= 0) { y0 -= 1; y1 += 1; }
    double xs = nice_step(x1 - x0, 6), ys = nice_step(y1 - y0, 6);
    x0 = floor(x0 / xs) * xs; x1 = ceil(x1 / xs) * xs;
    y0 = floor(y0 / ys) * ys; y1 = ceil(y1 / ys) * ys;
    double pw = WIDTH - LEFT - RIGHT, ph = HEIGHT - TOP - BOTTOM;
#define PX(x) (LEFT + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (TOP + (y1 - (y)) / (y1 - y0) * ph)

    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" "
            "font-size=\"12\">\n", WIDTH, HEIGHT, WIDTH, HEIGHT);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%d\" y=\"22\" font-size=\"15\">", LEFT);
    put_escaped(f, title);
    fprintf(f, "</text>\n");
    /* Grid lines and tick labels. */
    for (double x = x0; x <= x1 + xs * 1e-9; x += xs)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#e5e5e5\"/><text x=\"%.1f\" y=\"%.1f\" "
                "text-anchor=\"middle\">%g</text>\n", PX(x), TOP, PX(x),
                TOP + ph, PX(x), TOP + ph + 16, x);
    for (double y = y0; y <= y1 + ys * 1e-9; y += ys)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#e5e5e5\"/><text x=\"%d\" y=\"%.1f\" "
                "text-anchor=\"end\">%g</text>\n", LEFT, PY(y), LEFT + pw,
                PY(y), LEFT - 6, PY(y) + 4, y);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" "
            "fill=\"none\" stroke=\"black\"/>\n", LEFT, TOP, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">",
            LEFT + pw / 2, HEIGHT - 12);
    put_escaped(f, xlabel);
    fprintf(f, "</text>\n<text transform=\"translate(18 %.1f) rotate(-90)\" "
            "text-anchor=\"middle\">", TOP + ph / 2);
    put_escaped(f, ylabel);
    fprintf(f, "</text>\n");
    /* The series: polylines broken at non-finite points. */
    int legend = 0;
    for (size_t s = 0; s < count; s++) {
        const plot_series *p = &series[s];
        const char *col = palette[(size_t)p->colour %
                                  (sizeof palette / sizeof palette[0])];
        const char *dash = p->dashed ? " stroke-dasharray=\"5 3\"" : "";
        int open = 0;
        for (size_t i = 0; i < p->n; i++) {
            if (!isfinite(p->x[i]) || !isfinite(p->y[i])) {
                if (open)
                    fprintf(f, "\"/>\n");
                open = 0;
                continue;
            }
            if (!open)
                fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" "
                        "stroke-width=\"1.6\"%s points=\"", col, dash);
            fprintf(f, "%.1f,%.1f ", PX(p->x[i]), PY(p->y[i]));
            open = 1;
        }
        if (open)
            fprintf(f, "\"/>\n");
        if (p->dashed)
            for (size_t i = 0; i < p->n; i++)
                if (isfinite(p->x[i]) && isfinite(p->y[i]))
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" "
                            "fill=\"%s\"/>\n", PX(p->x[i]), PY(p->y[i]), col);
        if (p->label) {
            double ly = TOP + 12 + 20.0 * legend++;
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                    "stroke=\"%s\" stroke-width=\"2\"%s/><text x=\"%.1f\" "
                    "y=\"%.1f\">", LEFT + pw + 12, ly, LEFT + pw + 36, ly, col,
                    dash, LEFT + pw + 42, ly + 4);
            put_escaped(f, p->label);
            fprintf(f, "</text>\n");
        }
    }
    fprintf(f, "</svg>\n");
#undef PX
#undef PY
    if (fclose(f) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}
