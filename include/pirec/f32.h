#ifndef PIREC_F32_H
#define PIREC_F32_H

/* Shortest round-trip text for IEEE 754 binary32 values, without printf.
 *
 * pirec_f32_format() writes the fewest significant decimal digits that read back (strtof, Python's
 * float() then numpy.float32, R's as.numeric then a single-precision cast) to exactly the same
 * float; among candidates of that length, the one nearest the value. This is the free-format
 * algorithm of Steele & White as refined by Burger & Dybvig ("Printing Floating-Point Numbers
 * Quickly and Accurately", PLDI 1996), computed exactly in 192-bit integers, which is enough for
 * every binary32 value. Layout follows printf's %g with 9 significant digits: fixed notation for
 * decimal exponents -4..8 ("0.5", "1234.5678", "0.00012"), otherwise "1.5e-07", "3.4028235e+38";
 * "-0", "inf", "-inf", "nan" (any NaN payload; the sign of a NaN is not kept).
 *
 * The result is not NUL-terminated. A full proof of round-trip over all 2^32 bit patterns is
 * `build/bench/bench-f32 --all` (docs/PERFORMANCE.md); make check tests a large random sample.
 */

#include <stddef.h>

/* Longest output: "-1.17549435e-38" (15 bytes). */
#define PIREC_F32_MAX 16

/* Writes the text of f into out[0..PIREC_F32_MAX) and returns its length (1..15). Thread-safe. */
size_t pirec_f32_format(char out[PIREC_F32_MAX], float f);

#endif
