/* gpucheck_scene.h - the GPU check's test scene, one pixel at a time, in
 * integer fixed-point arithmetic only (Q16.16 in 64-bit integers, integer
 * square roots and divisions), so that the CUDA kernel (gpucheck_cuda.cu)
 * and the CPU reference (gpucheck.c) compute the same bits: any difference
 * is a fault, there is no tolerance.
 *
 * The scene: a camera over a checkered floor with three spheres, a
 * directional light with hard shadows, Blinn-Phong highlights, one mirror
 * bounce off the spheres, a sky gradient, and 2x2 supersampling per pixel.
 * `frame` moves the spheres (each frame is another image).
 *
 * Internal to gpucheck: included by gpucheck.c and gpucheck_cuda.cu only.
 * Nothing here allocates.
 */
#ifndef IPK_GPUCHECK_SCENE_H
#define IPK_GPUCHECK_SCENE_H

#include <stdint.h>

#ifdef __CUDACC__
#define GS_FN __host__ __device__ static inline
#else
#define GS_FN static inline
#endif

#define GS_ONE ((int64_t)1 << 16)
#define GS_F(x) ((int64_t)((x) * 65536.0)) /* a constant in Q16 */

struct gs_v3 {
	int64_t x, y, z;
};

GS_FN struct gs_v3 gs_v(int64_t x, int64_t y, int64_t z)
{
	struct gs_v3 r;
	r.x = x;
	r.y = y;
	r.z = z;
	return r;
}

GS_FN int64_t gs_mul(int64_t a, int64_t b)
{
	return (a * b) >> 16; /* arithmetic shift of a signed value: gcc/clang/nvcc all floor */
}

GS_FN int64_t gs_dot(struct gs_v3 a, struct gs_v3 b)
{
	return (a.x * b.x + a.y * b.y + a.z * b.z) >> 16;
}

GS_FN struct gs_v3 gs_add(struct gs_v3 a, struct gs_v3 b)
{
	return gs_v(a.x + b.x, a.y + b.y, a.z + b.z);
}

GS_FN struct gs_v3 gs_sub(struct gs_v3 a, struct gs_v3 b)
{
	return gs_v(a.x - b.x, a.y - b.y, a.z - b.z);
}

GS_FN struct gs_v3 gs_scale(struct gs_v3 a, int64_t s)
{
	return gs_v(gs_mul(a.x, s), gs_mul(a.y, s), gs_mul(a.z, s));
}

/* floor(sqrt(v)), bit by bit */
GS_FN uint64_t gs_isqrt(uint64_t v)
{
	uint64_t r = 0, b = (uint64_t)1 << 62;
	while (b > v)
		b >>= 2;
	while (b) {
		if (v >= r + b) {
			v -= r + b;
			r = (r >> 1) + b;
		} else {
			r >>= 1;
		}
		b >>= 2;
	}
	return r;
}

/* a (Q16) scaled to length 1 (Q16); the zero vector stays zero */
GS_FN struct gs_v3 gs_norm(struct gs_v3 a)
{
	int64_t len = (int64_t)gs_isqrt((uint64_t)(a.x * a.x + a.y * a.y + a.z * a.z));
	if (len == 0)
		return a;
	return gs_v(a.x * GS_ONE / len, a.y * GS_ONE / len, a.z * GS_ONE / len);
}

#define GS_NSPH 3

struct gs_sphere {
	struct gs_v3 c;
	int64_t r;
	int32_t rgb[3];
};

GS_FN struct gs_sphere gs_sphere_of(int i, int frame)
{
	struct gs_sphere s;
	/* frame moves each sphere on its own small circle (an integer
	 * table of 16 points, no trigonometry) */
	const int8_t ring[16] = { 0, 5, 9, 12, 13, 12, 9, 5, 0, -5, -9, -12, -13, -12, -9, -5 };
	int64_t ox = (int64_t)ring[(frame + 5 * i) & 15] * (GS_ONE / 64);
	int64_t oz = (int64_t)ring[(frame + 5 * i + 4) & 15] * (GS_ONE / 64);
	if (i == 0) {
		s.c = gs_v(GS_F(-1.1) + ox, GS_F(0.6), GS_F(1.2) + oz);
		s.r = GS_F(0.6);
		s.rgb[0] = 230, s.rgb[1] = 60, s.rgb[2] = 50;
	} else if (i == 1) {
		s.c = gs_v(GS_F(0.35) + ox, GS_F(0.9), GS_F(2.4) + oz);
		s.r = GS_F(0.9);
		s.rgb[0] = 70, s.rgb[1] = 200, s.rgb[2] = 90;
	} else {
		s.c = gs_v(GS_F(1.35) + ox, GS_F(0.4), GS_F(0.6) + oz);
		s.r = GS_F(0.4);
		s.rgb[0] = 60, s.rgb[1] = 110, s.rgb[2] = 240;
	}
	return s;
}

/* Distance (Q16) along unit d from o to sphere s, or -1 when missed or
 * behind (closer than 1/256). */
GS_FN int64_t gs_hit_sphere(struct gs_v3 o, struct gs_v3 d, struct gs_sphere s)
{
	struct gs_v3 oc = gs_sub(o, s.c);
	int64_t b = gs_dot(oc, d);                     /* Q16 */
	int64_t cc = gs_dot(oc, oc) - gs_mul(s.r, s.r); /* Q16 */
	int64_t disc = b * b - cc * GS_ONE;              /* Q32 */
	if (disc < 0)
		return -1;
	int64_t q = (int64_t)gs_isqrt((uint64_t)disc); /* Q16 */
	int64_t t = -b - q;
	if (t < GS_ONE / 256)
		t = -b + q;
	return t < GS_ONE / 256 ? -1 : t;
}

/* The nearest sphere hit: its index (t in *tmin) or -1. */
GS_FN int gs_nearest(struct gs_v3 o, struct gs_v3 d, int frame, int64_t *tmin)
{
	int best = -1;
	*tmin = (int64_t)1 << 40;
	for (int i = 0; i < GS_NSPH; i++) {
		int64_t t = gs_hit_sphere(o, d, gs_sphere_of(i, frame));
		if (t > 0 && t < *tmin) {
			*tmin = t;
			best = i;
		}
	}
	return best;
}

GS_FN int64_t gs_clamp(int64_t v, int64_t lo, int64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* One ray's colour, channels 0..255 scaled by 256 (so averaging keeps
 * precision): at most one mirror bounce. */
GS_FN void gs_trace(struct gs_v3 o, struct gs_v3 d, int frame, int64_t out[3])
{
	const struct gs_v3 light = gs_norm(gs_v(GS_F(-0.5), GS_F(1.0), GS_F(-0.6)));
	int64_t weight = GS_ONE; /* Q16 share of this bounce */
	out[0] = out[1] = out[2] = 0;
	for (int bounce = 0; bounce < 2; bounce++) {
		int64_t t, base[3], spec = 0, mirror = 0;
		struct gs_v3 p, n;
		int hit = gs_nearest(o, d, frame, &t);
		int64_t tf = d.y < 0 ? -o.y * GS_ONE / d.y : -1; /* floor plane y = 0 */
		if (hit >= 0 && (tf < 0 || t < tf)) {
			struct gs_sphere s = gs_sphere_of(hit, frame);
			p = gs_add(o, gs_scale(d, t));
			n = gs_sub(p, s.c);
			n = gs_v(n.x * GS_ONE / s.r, n.y * GS_ONE / s.r, n.z * GS_ONE / s.r);
			base[0] = s.rgb[0], base[1] = s.rgb[1], base[2] = s.rgb[2];
			struct gs_v3 h = gs_norm(gs_sub(light, d));
			int64_t sh = gs_clamp(gs_dot(n, h), 0, GS_ONE);
			for (int k = 0; k < 5; k++) /* ^32 */
				sh = gs_mul(sh, sh);
			spec = sh;
			mirror = GS_F(0.35);
		} else if (tf > 0 && tf < GS_F(60)) {
			p = gs_add(o, gs_scale(d, tf));
			n = gs_v(0, GS_ONE, 0);
			int cx = (int)(p.x >> 16) + (p.x < 0 ? -1 : 0), cz = (int)(p.z >> 16) + (p.z < 0 ? -1 : 0);
			int64_t g = ((cx + cz) & 1) ? 200 : 60;
			base[0] = g, base[1] = g, base[2] = g - 10;
		} else {
			/* sky: a gradient over the ray's height */
			int64_t u = gs_clamp(d.y + GS_F(0.2), 0, GS_ONE);
			int64_t sky[3] = { 150 - gs_mul(100, u), 190 - gs_mul(80, u), 255 };
			for (int c = 0; c < 3; c++)
				out[c] += gs_mul(weight, sky[c] * 256);
			return;
		}
		/* direct light with a hard shadow */
		int64_t diff = gs_clamp(gs_dot(n, light), 0, GS_ONE), ts;
		if (diff > 0 && gs_nearest(gs_add(p, gs_scale(n, GS_ONE / 128)), light, frame, &ts) >= 0)
			diff = 0, spec = 0;
		int64_t lit = GS_F(0.15) + gs_mul(GS_F(0.85), diff);
		int64_t local = GS_ONE - mirror;
		for (int c = 0; c < 3; c++) {
			int64_t v = gs_mul(base[c] * 256, lit) + gs_mul(255 * 256, gs_mul(spec, GS_F(0.8)));
			out[c] += gs_mul(weight, gs_mul(local, v));
		}
		if (!mirror)
			return;
		weight = gs_mul(weight, mirror);
		/* reflect d about n and go on from just outside the surface */
		d = gs_norm(gs_sub(d, gs_scale(n, 2 * gs_dot(d, n))));
		o = gs_add(p, gs_scale(n, GS_ONE / 128));
	}
}

/* The pixel (px, py) of a w x h image of frame `frame`, as 0xAABBGGRR
 * (bytes R, G, B, A in memory on a little-endian machine). */
GS_FN uint32_t gs_pixel(int px, int py, int w, int h, int frame)
{
	const struct gs_v3 eye = gs_v(0, GS_F(1.1), GS_F(-3.2));
	int64_t acc[3] = { 0, 0, 0 };
	for (int sy = 0; sy < 2; sy++)
		for (int sx = 0; sx < 2; sx++) {
			/* sub-sample centre in Q16 screen units: x in about -w/h..w/h, y in -1..1 */
			int64_t fx = (int64_t)(4 * px + 2 * sx + 1 - 2 * w) * GS_ONE / (2 * h);
			int64_t fy = (int64_t)(2 * h - 4 * py - 2 * sy - 1) * GS_ONE / (2 * h);
			struct gs_v3 d = gs_norm(gs_v(fx, fy - GS_F(0.25), GS_F(1.6)));
			int64_t c[3];
			gs_trace(eye, d, frame, c);
			for (int k = 0; k < 3; k++)
				acc[k] += c[k];
		}
	uint32_t px32 = 0xff000000u;
	for (int k = 0; k < 3; k++) {
		int64_t v = gs_clamp((acc[k] / 4 + 128) >> 8, 0, 255);
		px32 |= (uint32_t)v << (8 * k);
	}
	return px32;
}

#endif
