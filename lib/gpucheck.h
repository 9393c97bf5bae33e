/* gpucheck.h - a short rendering test of this host's GPU, run on the
 * target of a migration after the restore (ip-migrate --verify-gpu) and
 * alone for troubleshooting (ip-migrate --gpu-check).
 *
 * A CUDA kernel renders a deterministic test scene (gpucheck_scene.h: three
 * spheres over a checkered floor, shadows, highlights, one mirror bounce,
 * 2x2 supersampling) in integer fixed-point arithmetic; the CPU renders the
 * same image with the same integer code; the two must be equal bit for bit
 * (there is no tolerance: any differing pixel is a fault). The result names
 * the device, the kernel time, the pixels, the largest channel difference,
 * the differing pixels and both images' checksums (FNV-1a 64 over the RGBA
 * bytes).
 *
 * The kernel is in gpucheck_cuda.cu, built only when nvcc is found
 * (HAVE_CUDA); gpucheck.c holds the CPU reference, the comparison and the
 * driver. gpucheck.c and gpucheck_cuda.cu depend on libc and pthreads
 * only (and cudart with CUDA), so the check links without the rest of
 * libipkit (ipk.c aside; tests/unit/test-gpucheck.c builds that way). The
 * JSON forms (record, protocol) are in gpucheck_rec.c, which needs cJSON.
 *
 * Ownership: results are plain structs filled by the callee; image buffers
 * are the caller's. Nothing returned needs freeing. Not thread-safe on the
 * GPU side (uses the current CUDA device of the calling thread).
 */
#ifndef IPK_GPUCHECK_H
#define IPK_GPUCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "ipk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the check found. NOT_RUN: no result yet (the zero value). */
enum ipk_gpucheck_status {
	IPK_GPUCHECK_NOT_RUN = 0,
	IPK_GPUCHECK_PASS,
	IPK_GPUCHECK_FAIL,        /* wrong pixels, or a CUDA error on a usable GPU */
	IPK_GPUCHECK_UNAVAILABLE, /* no CUDA runtime / driver, no device, or built without nvcc */
	IPK_GPUCHECK_SKIPPED,     /* not run by policy (verification: no GPU, mode auto) */
};

/* When verification runs it (ip-migrate --verify-gpu). OFF is the zero
 * value: library callers that do not ask get no check. */
enum ipk_gpucheck_mode {
	IPK_GPUCHECK_OFF = 0,     /* "no" */
	IPK_GPUCHECK_AUTO,        /* "auto": run; no GPU on the target is "skipped", not a failure */
	IPK_GPUCHECK_REQUIRE,     /* "yes": run; no GPU fails the verification */
};

#define IPK_GPUCHECK_WIDTH 1024 /* default image: 786,432 pixels, 3.1 M rays per frame */
#define IPK_GPUCHECK_HEIGHT 768
#define IPK_GPUCHECK_FRAMES 8     /* default frames: 6.3 M pixels in all */
#define IPK_GPUCHECK_MAX_PIXELS (64u << 20)

struct ipk_gpucheck_opts {
	int width, height;  /* <= 0: the defaults above; w*h*frames at most IPK_GPUCHECK_MAX_PIXELS */
	int frame;          /* first frame (scene variant: moves the spheres); 0 normally */
	int frames;         /* frames rendered, frame .. frame+frames-1; <= 0: IPK_GPUCHECK_FRAMES */
	int threads;        /* CPU reference threads; <= 0: online CPUs, at most 16 */
	int device;         /* CUDA device index (default 0) */
	long corrupt_pixel; /* test hook: > 0 flips pixel N-1 of the GPU's image before the comparison */
};

struct ipk_gpucheck_result {
	int status;              /* enum ipk_gpucheck_status */
	char device[256];        /* GPU name ("" when none) */
	int width, height, frames;
	uint64_t pixels;         /* width * height * frames */
	double gpu_ms;           /* the render kernel alone (CUDA events) */
	double total_ms;         /* the whole check: allocation, kernel, copy, CPU reference, comparison */
	double cpu_ms;           /* the CPU reference */
	int max_diff;            /* largest |GPU - CPU| of one channel, 0..255 */
	uint64_t bad_pixels;     /* pixels that differ */
	char checksum[17];       /* the GPU image, hex FNV-1a 64 ("" when it did not render) */
	char reference[17];      /* the CPU image */
	char message[512];       /* why it failed or is unavailable ("" on pass) */
};

/* Run the check with o (NULL: defaults). Returns 0 with r->status PASS, or
 * -1 with r filled as far as it got and err set: IPK_EXIT_FAIL (status
 * FAIL: differing pixels, a CUDA error on a device that was found),
 * IPK_EXIT_UNAVAILABLE (status UNAVAILABLE: no CUDA in this build, no
 * usable driver, no device), IPK_EXIT_OSERR (out of memory; status FAIL),
 * IPK_EXIT_USAGE (bad size). r->message repeats err's message. */
int ipk_gpucheck_run(const struct ipk_gpucheck_opts *o, struct ipk_gpucheck_result *r, struct ipk_err *err);

/* The CPU reference: rows y0 .. y1-1 of the w x h image of `frame` into
 * img (w*h pixels, 0xAABBGGRR), with `threads` threads (<= 1: this one).
 * Returns 0, or -1 with err (IPK_EXIT_OSERR: no thread could start, or
 * IPK_EXIT_USAGE: bad arguments). */
int ipk_gpucheck_render_cpu(int w, int h, int frame, int threads, uint32_t *img, struct ipk_err *err);

/* FNV-1a 64 of n pixels as bytes R, G, B, A each, as 16 hex digits in
 * out (17 bytes). */
void ipk_gpucheck_checksum(const uint32_t *img, size_t n, char out[17]);

/* Compare two images of n pixels: returns the number of differing pixels
 * and the largest channel difference in *max_diff. */
uint64_t ipk_gpucheck_compare(const uint32_t *a, const uint32_t *b, size_t n, int *max_diff);

/* Names: "pass", "fail", "unavailable", "skipped", "not-run"; modes "no",
 * "auto", "yes". ipk_gpucheck_mode_parse returns the mode or -1. */
const char *ipk_gpucheck_status_name(int status);
const char *ipk_gpucheck_mode_name(int mode);
int ipk_gpucheck_mode_parse(const char *s);

/* Verification's verdict on r (the target's result, or NOT_RUN when the
 * target did not run it) under mode: returns 0 when the verification may
 * go on (PASS; with AUTO, an unavailable GPU or a check that was not run,
 * whose status then becomes SKIPPED with the reason in r->message; mode
 * OFF), or -1 with err: IPK_EXIT_FAIL ("verify gpu on the target
 * 'DEVICE': ..." for a failed check) or IPK_EXIT_UNAVAILABLE (mode REQUIRE
 * and no GPU, or no result). */
int ipk_gpucheck_judge(struct ipk_gpucheck_result *r, int mode, struct ipk_err *err);

/* ---- JSON forms (gpucheck_rec.c; needs cJSON) ---- */

struct cJSON;

/* Add r's fields to obj: status, device, width, height, pixels, gpu_ms,
 * total_ms, cpu_ms, max_diff, bad_pixels, checksum, reference, message
 * (fields without a value are left out). Returns 0, or -1 when out of
 * memory. */
int ipk_gpucheck_to_json(const struct ipk_gpucheck_result *r, struct cJSON *obj);

/* The inverse, for the sender reading the receiver's reply: r is zeroed
 * first; a missing or malformed obj leaves status NOT_RUN. */
void ipk_gpucheck_from_json(const struct cJSON *obj, struct ipk_gpucheck_result *r);

/* A "gpucheck" record (ipkit-records(7)) of r on host; NULL when out of
 * memory. The caller cJSON_Delete()s it. */
struct cJSON *ipk_gpucheck_record(const struct ipk_gpucheck_result *r, const char *host);

/* The receiver's side of verification (ip-migrate's "gpucheck" request,
 * answered by "gpuchecked"): when mode_name is "auto" or "yes",
 * run the check with the defaults and add it to reply as "gpu" (whatever
 * the outcome: the sender judges it). Returns 0, or -1 when out of memory.
 * Does nothing for NULL, "no" or an unknown mode. */
int ipk_gpucheck_reply(const char *mode_name, struct cJSON *reply);

/* ---- internal: the CUDA side (gpucheck_cuda.cu, or unavailable) ---- */

/* Render `frames` w x h images, frame .. frame+frames-1, on device dev
 * into img (host memory, one image after the other) and fill
 * r->device and r->gpu_ms. Returns 0, or -1 with err and r->status set
 * (UNAVAILABLE / FAIL). */
int ipk_gpucheck_render_gpu(int dev, int w, int h, int frame, int frames, long corrupt_pixel, uint32_t *img,
			    struct ipk_gpucheck_result *r, struct ipk_err *err);

#ifdef __cplusplus
}
#endif

#endif
